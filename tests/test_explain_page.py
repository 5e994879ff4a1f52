"""The page of `charlstm explain` in a real browser: headless Chromium driven by Playwright.

Chromium is the system's (Debian's `chromium` package, or $CHARLSTM_CHROMIUM); Playwright
downloads no browser of its own here. Without either the tests skip and say why.
"""

import os
import shutil

import pytest
from helpers import QUOTE_UNIT, page_data, quote_text, words, write_model, write_quote_model

from charlstm.config import ExplainConfig
from charlstm.explain import explain

CHROMIUM = os.environ.get("CHARLSTM_CHROMIUM") or shutil.which("chromium") or shutil.which(
    "chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install "
                                "chromium, or set CHARLSTM_CHROMIUM): the page is not opened")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright is not installed (pip install playwright)")

RED, BLUE = "rgba(214, 39, 40", "rgba(31, 119, 180"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser):
    pages = []

    def open_(path):
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.set_default_timeout(10_000)
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: page.errors.append(f"request {r.url}")
                if not r.url.startswith("file://") else None)
        page.goto(f"file://{path}")
        pages.append(page)
        return page

    yield open_
    for page in pages:
        assert page.errors == []
        page.close()


@pytest.fixture
def quote_page(tmp_path):
    write_quote_model(tmp_path / "run")
    (tmp_path / "quotes.txt").write_text(quote_text(2000))
    report = explain(ExplainConfig(checkpoint=str(tmp_path / "run"),
                                   text=str(tmp_path / "quotes.txt"),
                                   out=str(tmp_path / "page.html")))
    return tmp_path / "page.html", report


def backgrounds(page):
    return page.eval_on_selector_all("#text span",
                                     "spans => spans.map(s => s.style.backgroundColor)")


def test_the_page_renders_the_text_one_span_per_char(quote_page, open_page):
    path, report = quote_page
    page = open_page(path)
    text = page_data(path)["text"]
    shown = page.eval_on_selector_all("#text span", "spans => spans.map(s => s.textContent)")
    assert "".join(shown).replace("↵", "") == text and len(shown) == len(text)
    assert f"{report['bits_per_char']:.4f} bits per char" in page.inner_text("#summary")
    # It opens on the unit that tracks a feature best, ready to be shown.
    assert page.input_value("#unit") == str(QUOTE_UNIT)


def test_hovering_a_char_shows_the_models_top_5_next_chars(quote_page, open_page):
    path, _ = quote_page
    page = open_page(path)
    data = page_data(path)
    assert page.is_hidden("#tip")
    i = 57
    page.hover(f'#text span[data-i="{i}"]')
    assert page.is_visible("#tip")
    rows = page.locator("#tip tr.pred")
    assert rows.count() == 5
    for j in range(5):
        char = data["vocab"][data["next"]["ids"][i * 5 + j]]
        cells = rows.nth(j).locator("td")
        assert cells.nth(0).inner_text() == {" ": "␣", "\n": "↵"}.get(char, char)
        assert cells.nth(2).inner_text() == f"{100 * data['next']['probs'][i * 5 + j]:.1f}%"
    assert f"{data['bits'][i]:.2f} bits" in page.inner_text("#tip")
    page.hover('#text span[data-i="3"]')  # the tip follows the pointer
    assert "at 3:" in page.inner_text("#tip")


def test_clicking_a_unit_recolours_the_text_by_it(quote_page, open_page):
    path, _ = quote_page
    page = open_page(path)
    text = page_data(path)["text"]
    surprise = backgrounds(page)
    button = page.locator('button.unit[data-feature="inside quotes"][data-rank="1"]')
    assert button.get_attribute("data-unit") == str(QUOTE_UNIT)
    button.click()
    coloured = backgrounds(page)
    assert coloured != surprise
    assert page.is_checked('input[name=mode][value=unit]')
    assert page.input_value("#unit") == str(QUOTE_UNIT)
    # The quote unit is red inside quotes and blue outside them after the first quote.
    inside, seen = False, False
    for char, colour in zip(text, coloured):
        if char == '"':
            inside, seen = not inside, True
        if seen and char != '"':
            assert colour.startswith(RED if inside else BLUE), (char, colour)
    # Another unit colours the text otherwise; surprise mode gives back the first colouring.
    other = page.locator('button.unit:not([data-unit="3"])').first
    other.click()
    assert backgrounds(page) != coloured
    page.check('input[name=mode][value=surprise]')
    assert backgrounds(page) == surprise


def test_a_gate_scatter_point_selects_its_unit(quote_page, open_page):
    path, _ = quote_page
    page = open_page(path)
    assert page.locator("svg.gate").count() == 3  # input, forget and output gates
    assert page.locator("svg.gate").first.locator("circle").count() == 8
    # Units often sit on the same spot of the plot, so the click goes to the point itself.
    page.locator("svg.gate").first.locator("circle").nth(5).dispatch_event("click")
    assert page.input_value("#unit") == "5"
    assert page.is_checked('input[name=mode][value=unit]')


def test_a_page_of_20000_chars_renders_and_recolours_whole(tmp_path, open_page):
    write_quote_model(tmp_path / "run")
    (tmp_path / "long.txt").write_text(quote_text(30_000, seed=1))
    report = explain(ExplainConfig(checkpoint=str(tmp_path / "run"),
                                   text=str(tmp_path / "long.txt"),
                                   out=str(tmp_path / "page.html")))
    assert report["chars"] == 20_000
    page = open_page(tmp_path / "page.html")
    assert page.locator("#text span").count() == 20_000
    before = backgrounds(page)
    page.locator('button.unit[data-feature="inside quotes"][data-rank="1"]').click()
    after = backgrounds(page)
    changed = sum(a != b for a, b in zip(before, after))
    assert changed > 19_000
    page.hover('#text span[data-i="19990"]')
    assert page.locator("#tip tr.pred").count() == 5


@pytest.mark.parametrize("name, config, gates", [
    ("lstm-seq", {"layers": 2}, 3), ("gru-seq", {}, 2), ("rnn-seq", {}, 0), ("fc3", {}, 0),
    ("charloop", {}, 0)])
def test_every_kind_of_model_gets_a_working_page(tmp_path, open_page, name, config, gates):
    text = words(3000, seed=3).replace(" the ", ' "the" ').replace(" of ", " (of) ") + "\n"
    write_model(tmp_path, name, sorted(set(text)), **config)
    (tmp_path / "t.txt").write_text(text)
    report = explain(ExplainConfig(checkpoint=str(tmp_path), text=str(tmp_path / "t.txt")))
    page = open_page(report["page"])
    data = page_data(report["page"])
    assert page.locator("#text span").count() == len(data["text"])
    assert page.locator("svg.gate").count() == gates
    assert page.locator("#signal option").count() == len(data["signals"])
    first = data["first_predicted"]
    page.hover(f'#text span[data-i="{first - 1}"]')  # the first char that predicts one
    assert page.locator("#tip tr.pred").count() == 5
    if first > 1:  # a window model: the chars before its first window predict nothing
        page.hover(f'#text span[data-i="{first - 2}"]')
        assert page.locator("#tip tr.pred").count() == 0
    labels = page.locator("button.unit").all_inner_texts()
    assert all(("·L" in label) == (config.get("layers", 1) > 1) for label in labels)
    before = backgrounds(page)
    page.locator("button.unit").last.click()
    assert backgrounds(page) != before
    if data["note"]:
        assert page.inner_text("#note") == data["note"]


def test_a_calculator_page_draws_its_trajectory_and_embeddings(tmp_path, open_page):
    from charlstm.calc import train
    from charlstm.config import CalcConfig

    train(CalcConfig(task="add", model="gru", hidden=3, n_fac=2, epochs=2, restarts=1,
                     out=str(tmp_path / "calc")))
    report = explain(ExplainConfig(checkpoint=str(tmp_path / "calc"), prime="7+1"))
    page = open_page(report["page"])
    assert f"reads \"7+1\" and predicts {report['prediction']:.3f} (exact: 8)" in \
        page.inner_text("#note")
    assert page.locator("#trajectory polyline").count() == 3  # one line per hidden unit
    labels = page.eval_on_selector_all("#embedding text.symbol", "ts => ts.map(t => t.textContent)")
    assert sorted(labels) == sorted("0123456789+")
    assert page.locator("#trajectory-table tr").count() == 4
