#!/usr/bin/env python3
"""Serve a generated text8.zip on 127.0.0.1 and print its URL once the server listens.

    python .ci/text8_server.py FOLDER &

CI has no internet: the README's first run downloads text8 from here instead
(CHARLSTM_TEXT8_URL). The text is words of text8's alphabet, in its form (lowercase, single
spaces), 2 MB, seeded, so that every run trains on the same text. Standard library only.
"""

import http.server
import io
import random
import sys
import zipfile
from functools import partial
from pathlib import Path

WORDS = ("the of and one in a to zero nine two is as eight for s five three was by that four "
         "six seven with on are it from or his an be this which at he also not have were has "
         "but other their its first they had some more all can been new may would time").split()


def text8_like(chars: int = 2_000_000, seed: int = 0) -> str:
    rng = random.Random(seed)
    words, size = [], 0
    while size < chars:
        words.append(rng.choice(WORDS))
        size += len(words[-1]) + 1
    return " " + " ".join(words)


def main(folder: str) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("text8", text8_like())
    (folder / "text8.zip").write_bytes(archive.getvalue())
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    print(f"http://127.0.0.1:{server.server_address[1]}/text8.zip", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: text8_server.py FOLDER")
    main(sys.argv[1])
