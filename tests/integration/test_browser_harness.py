"""The browser harness itself (tests/browser.py): headless Chromium opens a page from a real
HTTP server, types, clicks, waits for the page's own script to change the DOM, and saves a
whole-page screenshot; a wait that never holds fails naming what it waited for."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from sidecar.runtime.http import HttpServer
from tests.browser import Browser

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PAGE_HEIGHT = 2400  # taller than the 1000px window, so a window-only screenshot is caught

PAGE = f"""<!doctype html>
<html>
  <head><title>Harness</title><script src="/greet.js" defer></script></head>
  <body>
    <h1>Browser harness</h1>
    <form id="greet">
      <label for="name">Name</label>
      <input id="name" name="name" autocomplete="off">
      <button id="send" type="submit">Greet</button>
    </form>
    <p id="greeting">Nobody greeted yet.</p>
    <div style="height: {PAGE_HEIGHT}px">tall</div>
  </body>
</html>
"""

SCRIPT = """
document.getElementById("greet").addEventListener("submit", (event) => {
  event.preventDefault();
  const greeting = document.getElementById("greeting");
  greeting.textContent = `Hello, ${document.getElementById("name").value}!`;
  greeting.className = "greeted";
});
"""


def page_app() -> FastAPI:
    """A page whose form is handled by a script from a second route (no inline script)."""
    app = FastAPI()

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/greet.js")
    def script() -> Response:
        return Response(SCRIPT, media_type="text/javascript")

    return app


@pytest.fixture
def site() -> Iterator[str]:
    server = HttpServer(page_app(), "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{server.port}/"
    finally:
        server.stop()


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which always comes first."""
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_a_page_is_typed_into_clicked_and_captured(browser: Browser, site: str) -> None:
    browser.open(site)
    assert browser.driver.title == "Harness"
    assert browser.driver.find_element(By.TAG_NAME, "h1").text == "Browser harness"
    greeting = (By.ID, "greeting")
    assert browser.driver.find_element(*greeting).text == "Nobody greeted yet."

    browser.driver.find_element(By.ID, "name").send_keys("Ada")
    browser.driver.find_element(By.ID, "send").click()
    browser.wait_for(
        ec.text_to_be_present_in_element(greeting, "Hello, Ada!"), "the script's greeting"
    )
    assert browser.driver.find_element(*greeting).get_attribute("class") == "greeted"

    shot = browser.screenshot("greeted")
    data = shot.read_bytes()
    assert shot.parent == browser.artifacts
    assert data.startswith(PNG_SIGNATURE)
    width, height = png_size(data)
    assert width > 0
    assert height > PAGE_HEIGHT  # the whole page, not only the window


def test_a_wait_that_never_holds_names_what_it_waited_for(browser: Browser, site: str) -> None:
    browser.open(site)
    with pytest.raises(AssertionError, match="waiting for a greeting nobody asked for") as failed:
        browser.wait_for(
            ec.text_to_be_present_in_element((By.ID, "greeting"), "Hello"),
            "a greeting nobody asked for",
            timeout=0.2,
        )
    shot = Path(str(failed.value).rsplit("screenshot ", 1)[1].rstrip(")"))
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
