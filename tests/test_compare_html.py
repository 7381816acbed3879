"""The HTML comparison report: self-contained, and working in a real headless browser.

The browser is Debian's Chromium driven through its chromedriver with selenium
(``ci/install-browser.sh`` installs both; ci/test.sh runs it).
"""

from __future__ import annotations

import re
import shutil
import tempfile

import pytest
from test_compare import A, B, case, run

from conformance.compare import build
from conformance.report_html import to_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def page(tmp_path, *runs) -> tuple[str, str]:
    html = to_html(build(list(runs) or [A, B], ["a.json", "b.json"]), "QEMU 7.2 vs 10.0")
    path = tmp_path / "report.html"
    path.write_text(html, encoding="utf-8")
    return html, path.as_uri()


def test_self_contained(tmp_path):
    html, _ = page(tmp_path)
    assert "default-src 'none'" in html  # the page may not fetch anything
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:|//)""", html)
    assert "@import" not in html and "url(" not in html
    assert html.count("<tr class='case") == 7


def test_text_is_escaped(tmp_path):
    evil = run("q", "1.0.0", case("test_a.py::test_b", "failed", "<img src=x onerror=alert(1)>"))
    html, _ = page(tmp_path, evil, A)
    assert "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e .[test])")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium / chromedriver not installed (ci/install-browser.sh installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="vblk-chromium-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium must not try to download one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    driver.set_window_size(1400, 1000)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def visible_cases(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('tr.case'))"
        ".filter(function (tr) { return !tr.hidden; })"
        ".map(function (tr) { return tr.querySelector('td.case').textContent; });")


def visible_areas(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('tr.area-row'))"
        ".filter(function (tr) { return !tr.hidden; })"
        ".map(function (tr) { return tr.dataset.area; });")


def test_page_in_browser(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, url = page(tmp_path)
    browser.get(url)
    assert browser.title == "QEMU 7.2 vs 10.0"
    everything = ["test_mq", "test_vendor_id", "test_revision_id", "test_get_id", "test_flush",
                  "test_unknown[2]", "test_new"]
    assert visible_cases(browser) == everything
    assert browser.find_element(By.ID, "shown").text == "7"

    Select(browser.find_element(By.ID, "f-area")).select_by_value("requests")
    assert visible_cases(browser) == ["test_get_id", "test_flush", "test_unknown[2]"]
    assert visible_areas(browser) == ["requests"]

    browser.find_element(By.ID, "f-diff").click()
    assert visible_cases(browser) == ["test_get_id"]
    assert browser.find_element(By.ID, "shown").text == "1"

    Select(browser.find_element(By.ID, "f-area")).select_by_value("")
    assert visible_cases(browser) == ["test_mq", "test_get_id", "test_new"]
    assert visible_areas(browser) == ["features", "requests", "split_ring"]

    browser.find_element(By.ID, "f-diff").click()
    box = browser.find_element(By.ID, "f-text")
    box.send_keys("revision")  # matches the clause pci.revision-id
    assert visible_cases(browser) == ["test_revision_id"]
    box.clear()
    box.send_keys("x")  # clear() fires no input event; typing does
    box.send_keys("\b")
    assert visible_cases(browser) == everything

    # A cell opens to the failure message and the clauses.
    row = browser.find_element(By.CSS_SELECTOR, "tr.case[data-search*='test_get_id']")
    cell = row.find_elements(By.TAG_NAME, "td")[2]
    cell.find_element(By.TAG_NAME, "summary").click()
    text = cell.find_element(By.CSS_SELECTOR, "div.more").text
    assert "GET_ID returned junk" in text and "blk.get-id (MUST, 5.2.6)" in text

    # The per-area table's links filter too.
    browser.find_element(By.CSS_SELECTOR, "a.area-link[data-area='pci']").click()
    assert visible_cases(browser) == ["test_vendor_id", "test_revision_id"]

    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    assert browser.execute_script(
        "return performance.getEntriesByType('resource').length") == 0
