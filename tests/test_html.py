"""The HTML leaderboard in a real headless browser (Debian's chromium + chromedriver; skipped without them)."""

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from evalharness.report import board, render


def record(model, protocol, value, low, high):
    return {"model": model, "model_revision": "", "protocol": protocol, "protocol_version": 1, "probe": "knn",
            "headline": "top1", "conforming": True, "extraction_hash": "e", "probe_hash": "h", "manifest_hash": "m",
            "created_utc": "t", "metrics": {"top1": {"value": value, "ci_low": low, "ci_high": high, "n": 50,
                                                    "higher_is_better": True, "unit": "fraction"}}}


RECORDS = [record("alpha", "synthetic-appearance", 0.62, 0.55, 0.70), record("alpha", "synthetic-motion", 0.20, 0.12, 0.27),
           record("beta", "synthetic-appearance", 0.81, 0.74, 0.88), record("beta", "synthetic-motion", 0.99, 0.97, 1.0),
           record("gamma", "synthetic-appearance", 0.40, 0.30, 0.50)]


def test_page_is_self_contained():
    text = render(board(RECORDS), "html")
    assert text.count("<tr>") == 4 and "data:image/png;base64," in text
    assert "http://" not in text and "https://" not in text and "<link" not in text and " src=\"http" not in text


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
    from selenium.webdriver.common.by import By

    page = tmp_path / "board.html"
    page.write_text(render(board(RECORDS), "html"))
    browser.get(page.as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    models = lambda: [row.find_elements(By.TAG_NAME, "td")[0].text
                      for row in browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")]
    assert sorted(models()) == ["alpha", "beta", "gamma"]
    header = browser.find_elements(By.CSS_SELECTOR, "#leaderboard thead th")
    motion = next(h for h in header if "synthetic-motion" in h.text)
    motion.click()
    assert models() == ["gamma", "alpha", "beta"]  # ascending; gamma has no motion score
    motion.click()
    assert models() == ["beta", "alpha", "gamma"]
    assert len(browser.find_elements(By.TAG_NAME, "img")) == 2
    shot = np.array(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L"))
    assert shot.std() > 10 and (shot < 128).mean() > 0.01
