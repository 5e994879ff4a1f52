import io
import http.server
import random
import threading
import zipfile
from pathlib import Path

import pytest

from charlstm.data.corpus import Corpus, decode, read_corpus, strip_metadata
from charlstm.data.download import COPS_URL_ENV, DownloadError
from charlstm.data.normalize import text8_form



WORDS = "the nation we our people é will “change” work and freedom".split()


def speech(seed, words=60):
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)) + ".\n"


def test_strip_metadata_removes_the_president_line_and_tag_lines_only():
    raw = ("President: Barack Obama\r\n\r\n<title=\"Remarks\">\n<date=May 1, 2011>\n"
           "President Kennedy said: a <b> tag inside a line stays.\n  <title=\"x\">  \nEnd.\n")
    assert strip_metadata(raw) == "President Kennedy said: a <b> tag inside a line stays.\nEnd."


def test_strip_metadata_keeps_a_president_line_that_is_not_first():
    assert strip_metadata("Hello.\nPresident: someone\n") == "Hello.\nPresident: someone"


def write_speeches(root: Path, docs: dict):
    for name, text in docs.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_directory_zip_and_single_file_give_the_same_text(tmp_path):
    docs = {"b/2.txt": "President: B\n\n" + speech(2), "a.txt": "President: A\n\n" + speech(1),
            "b/notes.md": "not a transcript"}
    write_speeches(tmp_path / "dir", docs)
    from_dir = read_corpus(tmp_path / "dir")
    assert len(from_dir.documents) == 2
    assert from_dir.text == speech(1) + "\n" + speech(2)
    assert "President" not in from_dir.text and "not a transcript" not in from_dir.text

    archive = tmp_path / "speeches.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, text in docs.items():
            z.writestr("corpus/" + name, text)
    assert read_corpus(archive).text == from_dir.text

    single = tmp_path / "one.txt"
    single.write_text("President: A\n\n" + speech(1), encoding="utf-8")
    assert read_corpus(single).text == speech(1)


def test_validation_is_the_last_tenth_in_one_block():
    corpus = Corpus(["abcdefghij" * 10], "x")
    train, valid = corpus.split(0.1)
    assert train + valid == corpus.text and len(valid) == 10 and valid == corpus.text[-10:]


@pytest.mark.parametrize("setup, message", [
    (lambda p: p, "the folder has no .txt files"),
    (lambda p: p / "missing", "no such file or folder"),
    (lambda p: (p / "t.txt").write_text("President: X\n\n") and p / "t.txt", "no text"),
    (lambda p: (p / "e.txt").write_bytes(b"") or p / "e.txt", "no text"),
])
def test_bad_corpora_get_clear_errors(tmp_path, setup, message):
    with pytest.raises(ValueError, match=message):
        read_corpus(setup(tmp_path))


def cops_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("Corpus of Presidential Speeches/obama/obama_speeches_000.txt",
                   '<title="Inaugural">\n<date=January 20, 2009>\n' + speech(3))
        z.writestr("Corpus of Presidential Speeches/obama/obama_speeches_001.txt",
                   '<title="Second">\n<date=January 21, 2013>\n' + speech(4))
        z.writestr("Corpus of Presidential Speeches/lincoln/lincoln_speeches_000.txt",
                   '<title="Gettysburg">\n' + speech(5))
    return buffer.getvalue()


@pytest.fixture
def server():
    """A local HTTP server: path -> (status, body); records the paths requested."""
    routes, requests = {}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            status, body = routes.get(self.path, (404, b"missing"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", routes, requests
    httpd.shutdown()
    httpd.server_close()


def test_cops_downloads_once_caches_and_selects_a_president(tmp_path, monkeypatch, server):
    base, routes, requests = server
    routes["/cops.zip"] = (200, cops_zip())
    monkeypatch.setenv("CHARLSTM_HOME", str(tmp_path / "home"))
    corpus = read_corpus("cops:obama", cops_url=base + "/cops.zip", progress=False)
    assert len(corpus.documents) == 2
    assert corpus.text == speech(3) + "\n" + speech(4)
    assert len(list((tmp_path / "home").rglob("*.zip"))) == 1

    monkeypatch.setenv(COPS_URL_ENV, base + "/never-asked")
    assert read_corpus("cops:Barack Obama", progress=False).text == corpus.text
    assert len(read_corpus("cops:all", progress=False).documents) == 3
    assert requests == ["/cops.zip"]


def test_cops_url_comes_from_the_environment(tmp_path, monkeypatch, server):
    base, routes, requests = server
    routes["/env.zip"] = (200, cops_zip())
    monkeypatch.setenv("CHARLSTM_HOME", str(tmp_path))
    monkeypatch.setenv(COPS_URL_ENV, base + "/env.zip")
    assert read_corpus("cops:lincoln", progress=False).text == speech(5)
    assert requests == ["/env.zip"]


def test_cops_unknown_president_lists_the_folders(tmp_path, monkeypatch, server):
    base, routes, _ = server
    routes["/cops.zip"] = (200, cops_zip())
    monkeypatch.setenv("CHARLSTM_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="lincoln, obama"):
        read_corpus("cops:washington", cops_url=base + "/cops.zip", progress=False)


def test_cops_that_is_not_a_zip_is_not_cached(tmp_path, monkeypatch, server):
    base, routes, _ = server
    routes["/page"] = (200, b"<html>login first</html>")
    monkeypatch.setenv("CHARLSTM_HOME", str(tmp_path))
    with pytest.raises(DownloadError, match="did not return a zip"):
        read_corpus("cops:obama", cops_url=base + "/page", progress=False)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_cops_download_failure_says_how_to_go_on(tmp_path, monkeypatch, server):
    base, _, _ = server
    monkeypatch.setenv("CHARLSTM_HOME", str(tmp_path))
    with pytest.raises(DownloadError, match="--cops-url"):
        read_corpus("cops:obama", cops_url=base + "/gone", progress=False)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_a_zip_of_one_file_is_that_file_as_text8_zip_is(tmp_path):
    path = tmp_path / "t.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("text8", " anarchism originated")
    corpus = read_corpus(path, progress=False)
    assert corpus.documents == [" anarchism originated"]
    assert text8_form(corpus.documents) == (b" anarchism originated", None)


@pytest.mark.parametrize("members, message", [
    ({}, "holds no .txt files"),
    ({"a": "one", "b": "two"}, "holds no .txt files"),
])
def test_a_zip_without_text_members_is_refused(tmp_path, members, message):
    path = tmp_path / "e.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    with pytest.raises(ValueError, match=message):
        read_corpus(path, progress=False)


def test_a_folder_is_read_recursively_in_path_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.txt").write_text("third")
    (tmp_path / "a.txt").write_text("second")
    (tmp_path / "a-c.txt").write_text("first")  # '-' sorts before '.'
    (tmp_path / "notes.md").write_text("skipped")
    assert read_corpus(tmp_path).documents == ["first", "second", "third"]


@pytest.mark.parametrize("data, message", [
    ("caf\u00e9 au lait".encode("latin-1"),
     "x.txt is not UTF-8 text: undecodable byte 0xe9 at offset 3"),
    ("text".encode("utf-16"), "x.txt is not text: it holds a NUL byte at offset"),
    (b"\x00\x01\x02binary", "x.txt is not text: it holds a NUL byte at offset 0"),
])
def test_what_is_not_utf8_text_is_refused_with_the_file_and_the_byte(data, message):
    with pytest.raises(ValueError, match=message):
        decode("x.txt", data)


def test_a_byte_order_mark_and_windows_line_ends_are_read_as_text(tmp_path):
    (tmp_path / "w.txt").write_bytes("\ufeffone\r\ntwo\r\n".encode("utf-8"))
    assert read_corpus(tmp_path / "w.txt").documents == ["one\ntwo"]


def test_train_reads_the_same_documents_in_text8_form(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("President: Barack Obama\n\nThank you, 2 times.")
    text, report = text8_form(read_corpus(tmp_path).documents)
    assert text == b"thank you two times second"
    assert report.changed_chars > 0


def test_control_characters_are_not_text_but_a_few_tabs_and_escapes_are():
    with pytest.raises(ValueError, match=r"x.bin is not text: 25 of its 32 bytes are control "
                                         r"characters, the first \(0x01\) at offset 1"):
        decode("x.bin", b"a" + bytes(range(1, 32)))
    text = "col\tcol\f\x1b[1mbold\x1b[0m " + "words " * 200
    assert decode("x.txt", text.encode()) == text


def zipped(members: dict) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return archive.getvalue()


@pytest.mark.parametrize("name, data, message", [
    ("cut.zip", zipped({"a.txt": speech(1, 400)})[:300], "cut.zip is a damaged zip archive"),
    ("garbage.zip", b"PK\x03\x04" + b"x" * 400, "garbage.zip is a damaged zip archive"),
    ("plain.zip", b"not a zip at all\n" * 20, "plain.zip is a damaged zip archive"),
    ("no-suffix", b"PK\x03\x04" + bytes(300), "no-suffix is a damaged zip archive"),
    ("member.zip", zipped({"a.txt": bytes(range(256)) * 4}), "member.zip:a.txt is not text"),
])
def test_a_damaged_zip_or_a_binary_member_is_refused_as_what_it_is(tmp_path, name, data,
                                                                   message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match=message) as error:
        read_corpus(tmp_path / name, progress=False)
    assert "UTF-8" not in str(error.value) or "member" in name


def test_a_zip_whose_member_data_is_damaged_is_refused_as_a_damaged_zip(tmp_path):
    data = bytearray(zipped({"a.txt": speech(2, 400)}))
    data[60:70] = bytes(10)  # inside the compressed data: the header still reads
    (tmp_path / "d.zip").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"d.zip is a damaged zip archive \("):
        read_corpus(tmp_path / "d.zip", progress=False)
