"""``hvdr explore`` in a real browser: Debian's Chromium, headless, driven by Selenium.

The test starts the real command on a free port as a subprocess, opens its page,
takes a step, checks that the state shown and the phase highlighted in the diagram
changed, goes back, loads a malformed trace and a good one, saves the trace, and
checks a screenshot of the diagram is a picture (many colours, the red outline of
the current phase), not a blank area. Set ``HVDR_EXPLORE_SCREENSHOT=FILE`` to keep
the page's screenshot (README's ``docs/explore.png`` is one).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed "
    "(apt-get install chromium chromium-driver; .ci/run installs them)",
)


#: How long the page may take to answer a click (the model and Graphviz).
WAIT_SECONDS = 15


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium that saves downloads into ``tmp_path / "downloads"``."""
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1700,1300"):  # fmt: skip
        options.add_argument(argument)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads)}
    )
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_step(driver: WebDriver, at: int) -> None:
    """Wait until the page shows step ``at``."""
    WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: (
            d.find_element(By.TAG_NAME, "body").get_attribute("data-at") == str(at)
        )
    )


def shown_phase(driver: WebDriver) -> str:
    """The phase of vm0 in the state table."""
    row = driver.find_element(By.CSS_SELECTOR, '#state tr[data-path="vms[0].phase"]')
    return str(row.find_elements(By.TAG_NAME, "td")[1].text)


def highlighted(driver: WebDriver) -> list[str]:
    """The phases the diagram highlights (the SVG nodes of class ``current``)."""
    nodes = driver.find_elements(By.CSS_SELECTOR, "#diagram g.node.current > title")
    return [str(node.get_attribute("textContent")) for node in nodes]


def error_text(driver: WebDriver) -> str:
    """The error box's text, once it shows."""
    box = driver.find_element(By.ID, "error")
    WebDriverWait(driver, WAIT_SECONDS).until(lambda d: box.is_displayed())
    return str(box.text)


def test_explore_in_headless_chromium(
    explore_url: str, browser: WebDriver, tmp_path: Path
) -> None:
    """Step, back, load, save and the diagram, in a real browser."""
    browser.get(explore_url)
    wait_for_step(browser, 0)
    assert shown_phase(browser) == "unprotected"
    assert highlighted(browser) == ["unprotected"]
    refused = browser.find_element(
        By.CSS_SELECTOR, '#refused li[data-label="commit(vm=0)"]'
    )
    assert "commit is allowed only from: failed_over" in refused.text

    browser.find_element(
        By.CSS_SELECTOR, '#enabled button[data-label="enable_protection(vm=0)"]'
    ).click()
    wait_for_step(browser, 1)
    assert shown_phase(browser) == "initial_replication"
    assert highlighted(browser) == ["initial_replication"]
    changed = browser.find_elements(By.CSS_SELECTOR, "#state tr.changed")
    assert "vms[0].phase" in [row.get_attribute("data-path") for row in changed]

    picture = Image.open(io.BytesIO(
        browser.find_element(By.ID, "diagram").screenshot_as_png
    )).convert("RGB")  # fmt: skip
    colours = picture.getcolors(maxcolors=1 << 20)
    assert colours is not None
    assert len(colours) > 100, f"the diagram area has {len(colours)} colours"
    red = sum(
        count
        for count, colour in colours
        if isinstance(colour, tuple) and colour[0] > 200 and max(colour[1:]) < 60
    )
    assert red > 100, "no red outline of the current phase"
    keep = os.environ.get("HVDR_EXPLORE_SCREENSHOT")
    if keep:
        browser.save_screenshot(keep)

    browser.find_element(By.ID, "back").click()
    wait_for_step(browser, 0)
    assert shown_phase(browser) == "unprotected"
    assert highlighted(browser) == ["unprotected"]

    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text('{"action": "enable_protection", "vm": 0}\n{"action": \n')
    load = browser.find_element(By.ID, "load")
    load.send_keys(str(malformed))
    assert "malformed.jsonl, line 2: not valid JSON" in error_text(browser)
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-at") == "0"

    load.send_keys(str(ROOT / "tests" / "traces" / "failover_and_failback.jsonl"))
    steps = (ROOT / "tests" / "traces" / "failover_and_failback.jsonl").read_text()
    count = len([line for line in steps.splitlines() if '"action"' in line])
    wait_for_step(browser, count)
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert shown_phase(browser) == "protected"

    browser.find_element(By.ID, "save").click()
    saved = tmp_path / "downloads" / "explore-trace.jsonl"
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: saved.exists())
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert count == len(lines) - 1
    assert "config" in lines[0]
