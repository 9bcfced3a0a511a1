"""The HTML leaderboard: axes in percent, chance lines, zero scores, footer, the `--metric all` grid and per-class
details, in a real headless browser (Debian's chromium + chromedriver; those tests skip without them)."""

import io
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from evalharness import __version__
from evalharness.metrics import confusion
from evalharness.report import board, details, render
from evalharness.report import html as html_module
from evalharness.results import write_record

CLASSES = ["<b>bold</b>", "cat", "dog"]  # a hostile class name must show as text


def record(model, protocol, value, low, high, conforming=True, probe="knn", per_class=False):
    predictions = {"ids": ["a", "b", "c", "d"], "label": ["cat", "dog", "<b>bold</b>", "cat"],
                   "predicted": ["cat", "cat", "<b>bold</b>", "cat"], "value": [1, 0, 1, 1]}
    metrics = {name: {"value": value, "ci_low": low, "ci_high": high, "n": 50, "higher_is_better": True,
                      "unit": "fraction"} for name in ("top1", "top5", "mean_class")}
    return {"format": "evalharness.result", "schema_version": 2, "model": model, "model_revision": "",
            "protocol": protocol, "protocol_version": 1, "probe": probe, "headline": "top1", "conforming": conforming,
            "extraction_hash": "e" * 64, "probe_hash": "f" * 64, "manifest_hash": "a" * 64, "created_utc": "t",
            "embedding_file": {}, "config": {}, "chosen": {}, "metrics": metrics, "predictions": predictions,
            "per_class": confusion(predictions) if per_class else None, "notes": [], "caveats": [],
            "harness_version": __version__, "environment": {}, "timings": {}}


RECORDS = [record("alpha", "toy-appearance", 0.62, 0.55, 0.70, per_class=True),
           record("alpha", "toy-motion", 0.20, 0.12, 0.27), record("alpha", "toy-motion", 0.3, 0.2, 0.4,
                                                                        probe="linear", per_class=True),
           record("beta", "toy-appearance", 0.81, 0.74, 0.88), record("beta", "toy-motion", 0.99, 0.97, 1.0),
           record("gamma", "toy-appearance", 0.40, 0.30, 0.50),
           record("smoke", "toy-appearance", 0.0, 0.0, 0.05, conforming=False)]


def leaderboard_rows(text):
    return re.search(r'<table class="sortable" id="leaderboard">.*?</table>', text).group().count("<tr>") - 1


def test_page_is_self_contained_with_a_footer():
    text = render(board(RECORDS), "html")
    assert leaderboard_rows(text) == 4 and "data:image/png;base64," in text
    assert "http://" not in text and "https://" not in text and "<link" not in text and " src=\"http" not in text
    footer = text[text.index("<footer>"):]
    assert f"evalharness {__version__}" in footer and re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", footer)
    assert all(f"{h * 12}</td>" in footer for h in "efa") and "toy-motion v1" in footer


def test_plots_in_percent_with_a_chance_line_and_visible_zeros(monkeypatch):
    """Every bar plot: a percent axis, a dashed chance line at 1/3 (three classes named), a marker on every value
    (zero included, drawn over the axis), and the non-conforming model marked *."""
    figures = []
    monkeypatch.setattr(html_module, "_png", lambda figure: figures.append(figure) or "data:image/png;base64,")
    html_module.page(board(RECORDS))
    axes = figures[0].axes[0]
    assert axes.get_ylabel() == "percent" and axes.get_ylim() == (0, 105)
    chance = [line for line in axes.lines if line.get_linestyle() == "--"]
    assert len(chance) == 1 and chance[0].get_ydata()[0] == pytest.approx(100 / 3)
    markers = next(line for line in axes.lines if line.get_marker() == "D")
    assert list(markers.get_ydata()) == pytest.approx([62, 81, 40, 0]) and not markers.get_clip_on()
    assert [t.get_text() for t in axes.get_xticklabels()][-1] == "smoke *"
    ranks = board([{**RECORDS[0], "metrics": {"top1": {**RECORDS[0]["metrics"]["top1"], "unit": "rank", "value": 3.0,
                                                       "ci_low": 2.0, "ci_high": 4.0, "higher_is_better": False}}}])
    figures.clear()
    html_module.page(ranks)
    assert figures[0].axes[0].get_ylabel() == "rank (lower is better)"
    assert not [line for line in figures[0].axes[0].lines if line.get_linestyle() == "--"]  # no chance for ranks


def test_details_need_per_class_counts_of_a_known_model():
    assert [d["task"] for d in details(RECORDS, "alpha")] == ["toy-appearance v1 / knn",
                                                              "toy-motion v1 / linear"]
    with pytest.raises(Exception, match="no results of model nobody; these results hold alpha, beta, gamma, smoke"):
        details(RECORDS, "nobody")
    with pytest.raises(Exception, match="beta has no classification result with per-class counts"):
        details(RECORDS, "beta")


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Debian chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()


def test_page_in_headless_chromium(tmp_path, browser):
    """Headline page with per-class details of one model (through the command), then the `--metric all` grid."""
    from selenium.webdriver.common.by import By

    for r in RECORDS:
        write_record(r, tmp_path / "results")
    page = tmp_path / "board.html"
    made = subprocess.run([sys.executable, "-m", "evalharness", "leaderboard", tmp_path / "results", "--format",
                           "html", "--details", "alpha", "-o", page], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    browser.get(page.as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    models = lambda: [row.find_elements(By.TAG_NAME, "td")[0].text
                      for row in browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")]
    assert models() == ["alpha", "beta", "gamma", "smoke"]  # smoke is not ranked: last, with a dash
    smoke = browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")[-1].find_elements(By.TAG_NAME, "td")
    assert smoke[1].text.endswith("*") and "#" not in smoke[1].text and smoke[-2:][1].text == "\u2013"
    assert smoke[1].get_attribute("class") == "nonconforming" and smoke[-2].text == "0/3"
    header = browser.find_elements(By.CSS_SELECTOR, "#leaderboard thead th")
    motion = next(h for h in header if "toy-motion v1 / knn" in h.text)
    motion.click()
    assert models()[-2:] == ["alpha", "beta"]  # ascending; gamma and smoke have no motion score
    motion.click()
    assert models()[:2] == ["beta", "alpha"]
    assert len(browser.find_elements(By.CSS_SELECTOR, ".plots figure img")) == 3  # one plot per headline column
    # per-class details of alpha: two records, names shown as text, counts right, sortable by accuracy
    tables = browser.find_elements(By.CSS_SELECTOR, "table.per-class")
    assert len(tables) == 2 and browser.find_elements(By.TAG_NAME, "b") == []
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in tables[0].find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert rows == [["<b>bold</b>", "1", "1", "100.0"], ["cat", "2", "2", "100.0"], ["dog", "1", "0", "0.0"]]
    tables[0].find_elements(By.TAG_NAME, "th")[3].click()
    assert tables[0].find_element(By.CSS_SELECTOR, "tbody tr td").text == "dog"
    heat = browser.find_elements(By.CSS_SELECTOR, "table.confusion")[0]
    cells = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
             for tr in heat.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert cells == [["1", "", ""], ["", "2", ""], ["", "1", ""]]  # true dog predicted cat
    footer = browser.find_element(By.TAG_NAME, "footer").text
    assert f"evalharness {__version__}" in footer and "e" * 12 in footer
    shot = np.array(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L"))
    assert shot.std() > 10 and (shot < 128).mean() > 0.01

    page.write_text(render(board(RECORDS, "all"), "html"))
    browser.get(page.as_uri())
    tasks = [h.text for h in browser.find_elements(By.TAG_NAME, "h3")]
    assert tasks == ["toy-appearance v1 / knn", "toy-motion v1 / knn", "toy-motion v1 / linear"]
    figures = browser.find_elements(By.CSS_SELECTOR, ".plots figure")
    assert [f.find_element(By.TAG_NAME, "figcaption").text for f in figures[:3]] == ["mean_class", "top1", "top5"]
    tops = [f.location["y"] for f in figures]
    assert len(figures) == 9 and len(set(tops)) == 3  # a grid: three plots a row
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")


def test_details_only_in_html(tmp_path):
    write_record(RECORDS[0], tmp_path)
    out = subprocess.run([sys.executable, "-m", "evalharness", "leaderboard", tmp_path, "--details", "alpha"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "--details is shown in the html page" in out.stderr
    assert json.loads(render(board(RECORDS), "json"))["rows"][0]["cells"]  # chance and rank-less cells are json


def test_appearance_against_motion_plots_the_headline_metric_on_every_page(monkeypatch):
    drawn = []
    monkeypatch.setattr(html_module, "_png", lambda figure: "data:image/png;base64,")
    monkeypatch.setattr(html_module, "_scatter", lambda plt, data, x, y: drawn.append((x, y)) or "")
    for metric in ("headline", "all"):
        html_module.page(board(RECORDS, metric))
    assert drawn == [("toy-appearance v1 / knn top1", "toy-motion v1 / knn top1")] * 2
