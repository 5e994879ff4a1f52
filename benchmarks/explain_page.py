"""How long `charlstm explain` takes, how big its page is, and how quickly the page answers.

Writes the page for CHECKPOINT over TEXT (a text file, a folder of .txt files, a zip, or
cops:NAME; by default the run's validation text) cut to --max-chars, then opens it --repeats
times in headless Chromium (the system's, driven by Playwright) and times, inside the page, what
a reader waits for: the page's script that builds the text and colours it, and the first frame
drawn after it; a click on a ranked unit (decode its activations, recolour every char), a
switch back to surprise and the tooltip of a hovered char, each until the next frame is drawn.
Prints medians and writes JSON to benchmarks/results/.

    python benchmarks/explain_page.py --checkpoint runs/speeches-lstm
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from charlstm.checkpoint import atomic_write_json
from charlstm.config import ExplainConfig
from charlstm.explain import explain

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

# Run inside the page: the time of each interaction, in ms, as the page's own clock sees it,
# from the event until the frame after it has been drawn (a requestAnimationFrame callback runs
# before the frame's style, layout and paint; a task queued from it runs after them), so the
# recolouring of every char's span is counted, not only the script that sets the colours.
INTERACTIONS = """async () => {
  const drawn = () => new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));
  const time = async (f) => { await drawn(); const t = performance.now(); f(); await drawn();
                              return performance.now() - t; };
  const span = document.querySelector('#text span[data-i="100"]');
  const unit = document.querySelector('button.unit[data-rank="1"]');
  const surprise = document.querySelector('input[name=mode][value=surprise]');
  return {
    click_unit_ms: await time(() => unit.click()),
    back_to_surprise_ms: await time(() => { surprise.checked = true;
                                            surprise.dispatchEvent(new Event('change')); }),
    tooltip_ms: await time(() => span.dispatchEvent(new MouseEvent('mouseover',
                                                                   {bubbles: true}))),
  };
}"""
# The page's script builds and colours the text as the document is parsed; this notes when the
# first frame after it has been drawn: when a reader sees the whole coloured text.
DRAWN = """document.addEventListener("DOMContentLoaded", () => requestAnimationFrame(() =>
  setTimeout(() => { window.explainDrawn = performance.now(); }, 0)));"""
LOAD = """() => { const n = performance.getEntriesByType('navigation')[0];
                   return {dom_content_loaded_ms: n.domContentLoadedEventEnd,
                           load_ms: n.loadEventEnd, text_drawn_ms: window.explainDrawn}; }"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--text", help="default: the run's own validation text")
    parser.add_argument("--max-chars", type=int, default=ExplainConfig.max_chars)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chromium", default=os.environ.get("CHARLSTM_CHROMIUM")
                        or shutil.which("chromium"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"
                                              / "explain_page.json"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp())
    page_path = folder / "page.html"
    started = time.perf_counter()
    report = explain(ExplainConfig(checkpoint=args.checkpoint, text=args.text,
                                   max_chars=args.max_chars, out=str(page_path)))
    explain_seconds = time.perf_counter() - started
    page_bytes = page_path.stat().st_size
    runs = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=ARGS)
        for _ in range(args.repeats):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.add_init_script(DRAWN)
            page.goto(f"file://{page_path}")
            page.wait_for_function("window.explainDrawn !== undefined")
            runs.append({**page.evaluate(LOAD), **page.evaluate(INTERACTIONS)})
            page.close()
        browser.close()
    shutil.rmtree(folder)
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result = {"checkpoint": report["checkpoint"], "model": report["model"],
              "model_config": report["model_config"], "chars": report["chars"],
              "page_bytes": page_bytes, "explain_seconds": explain_seconds,
              "repeats": args.repeats, "median": medians, "runs": runs}
    print(f"{report['model']} {report['model_config']}: {report['chars']:,} chars, page "
          f"{result['page_bytes'] / 1e6:.1f} MB, written in {explain_seconds:.1f} s")
    for name, value in medians.items():
        print(f"  {name:<24} {value:8.1f} ms (median of {args.repeats})")
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
