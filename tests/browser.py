"""Headless Chromium for the browser tests: Debian's chromium and chromedriver (`make browser`),
driven through Selenium, with screenshots kept where CI can collect them."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver import Chrome, ChromeOptions
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

from tests.helpers import scaled

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000")
"""--no-sandbox: the tests run as root in containers, where Chromium's sandbox cannot start;
--disable-dev-shm-usage: a container's small /dev/shm would crash the renderer."""

REPO = Path(__file__).resolve().parents[1]
MAX_SCREENSHOT_HEIGHT = 16_000  # a runaway page must not make a gigapixel PNG

T = TypeVar("T")


def artifacts_dir() -> Path:
    """Where screenshots go: $SIDECAR_TEST_ARTIFACTS (CI uploads it), else .artifacts/screenshots
    in the repository (git-ignored)."""
    configured = os.environ.get("SIDECAR_TEST_ARTIFACTS")
    directory = Path(configured) if configured else REPO / ".artifacts" / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def missing_browser() -> str | None:
    """Why the browser cannot start here (a message naming the fix), or None."""
    absent = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if not absent:
        return None
    return f"{' and '.join(absent)} not found: run `make browser` (Debian's chromium packages)"


@contextmanager
def chromium_driver(javascript: bool = True) -> Iterator[Chrome]:
    """A headless Chromium session, quit at the end even when the test fails. Both paths are
    explicit, so Selenium Manager is never run and never downloads a browser or a driver.
    `javascript=False` reads pages as a browser with scripts turned off does."""
    options = ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    driver = Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        driver.set_page_load_timeout(scaled(30))
        yield driver
    finally:
        driver.quit()


@dataclass
class Browser:
    """A driver with the few things a page test needs; `driver` stays open for the rest."""

    driver: Chrome
    artifacts: Path
    prefix: str = ""  # the test's name, so two tests' screenshots never overwrite each other

    def open(self, url: str) -> None:
        self.driver.get(url)

    def screenshot(self, name: str) -> Path:
        """Save the whole page (not only the 1280x1000 window) as `<prefix>-<name>.png`."""
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics["cssContentSize"]
        clip = {
            "x": 0,
            "y": 0,
            "width": size["width"],
            "height": min(size["height"], MAX_SCREENSHOT_HEIGHT),
            "scale": 1,
        }
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}
        )
        stem = "-".join(part for part in (self.prefix, name) if part)
        path = self.artifacts / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def wait_for(
        self,
        condition: Callable[[Chrome], Literal[False] | T],
        what: str,
        timeout: float = 10.0,
    ) -> T:
        """Poll `condition(driver)` (e.g. a selenium expected_condition) until it is truthy and
        return its value; after `scaled(timeout)` seconds, save a screenshot and fail naming
        `what`, so a slow CI machine waits longer instead of flaking. An element missing or
        replaced while a page loads counts as not yet."""
        limit = scaled(timeout)
        missing = (NoSuchElementException, StaleElementReferenceException)
        wait = WebDriverWait(self.driver, limit, poll_frequency=0.05, ignored_exceptions=missing)
        try:
            return wait.until(condition)
        except TimeoutException:
            shot = self.screenshot(f"timeout-{what}")
            raise AssertionError(
                f"timed out after {limit:g}s waiting for {what} (screenshot {shot})"
            ) from None
