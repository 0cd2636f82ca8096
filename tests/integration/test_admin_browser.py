"""The admin page in headless Chromium, on a real `gepa-sidecar run` process over a real
database and broker: a person reads the overview, the prompt and the flagged candidate, enters
the token once, approves, sees the active version change (and the served document with it),
rolls back, and rejects a version from the lineage graph. Without JavaScript every page still
reads, and no form can post. Screenshots go to the artifacts directory (tests/browser.py)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as shown
from selenium.webdriver.support.ui import Select
from sqlalchemy import Engine

from sidecar.judge.judge import judge_for
from sidecar.llm.gateway import Gateway
from sidecar.optimize.evaluation import evaluation_key
from tests.admin_world import FLAG, AdminWorld, stage
from tests.browser import Browser, artifacts_dir, chromium_driver
from tests.conftest import Topics
from tests.helpers import scaled, wait_until
from tests.llm_server import LlmServer
from tests.processes import Sidecar, Start, sidecar_env
from tests.versions import NAME
from tests.world import SPEC, world_environment, world_settings

TOKEN = "browser-token-0123456789"


@dataclass
class Running:
    sidecar: Sidecar
    world: AdminWorld

    @property
    def url(self) -> str:
        return self.sidecar.base_url

    def served_version(self) -> int | None:
        """The version of the document this replica serves the chatbot (None before any)."""
        response = httpx.get(f"{self.url}/v1/prompts/{NAME}/active", timeout=scaled(10))
        return int(response.json()["version"]) if response.status_code == 200 else None


@pytest.fixture
def running(
    kafka_bootstrap: str,
    topics: Topics,
    sqlite_url: str,
    migrated_engine: Callable[[str], Engine],
    llm_server: LlmServer,
    start_sidecar: Start,
    tmp_path: Path,
) -> Iterator[Running]:
    """A staged store (tests/admin_world.py) under a running sidecar with an admin token."""
    gateway = Gateway(world_settings(llm_server.api_base))
    key = evaluation_key(gateway, judge_for(gateway, SPEC), SPEC)
    world = stage(migrated_engine(sqlite_url), key=key)
    env = {
        **sidecar_env(kafka_bootstrap, topics, sqlite_url),
        **world_environment(llm_server, tmp_path),
    }
    env.update(SIDECAR_ADMIN_TOKEN=TOKEN, SIDECAR_PUBLISH_DIR=str(tmp_path / "published"))
    sidecar = start_sidecar(env)
    started = Running(sidecar, world)
    wait_until(lambda: b"sidecar serving on port" in sidecar.log.read_bytes(), what="serving")
    wait_until(lambda: started.served_version() == world.active, what="v2 served")
    yield started


def text_of(driver: WebDriver, selector: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def flash(browser: Browser, pattern: str) -> str:
    """Wait until the status line matches `pattern`; return it."""

    def says(driver: WebDriver) -> str | bool:
        text = text_of(driver, "#flash")
        return text if re.search(pattern, text) else False

    return str(browser.wait_for(says, f"the status line to say {pattern!r}"))


def fill(driver: WebDriver, field: str, value: str) -> None:
    element = driver.find_element(By.CSS_SELECTOR, field)
    element.clear()
    element.send_keys(value)


def enter_token(browser: Browser, token: str) -> None:
    fill(browser.driver, "#admin-token", token)
    browser.driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
    browser.wait_for(
        lambda d: text_of(d, "#token-state") == "Token set for this browser session.",
        "the token to be set",
    )


def test_a_person_approves_the_flagged_candidate_and_rolls_back(
    running: Running, browser: Browser
) -> None:
    driver = browser.driver
    awaiting, active = running.world.awaiting, running.world.active

    browser.open(f"{running.url}/")
    assert text_of(driver, ".active-version") == f"v{active}"
    assert driver.find_elements(By.CSS_SELECTOR, "svg.trend circle.point")
    browser.screenshot("overview")

    driver.find_element(By.LINK_TEXT, NAME).click()
    browser.wait_for(shown.title_is(f"{NAME} · gepa-sidecar"), "the prompt page")
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.lineage a.node")) == 4
    assert "0.725" in text_of(driver, "#status-awaiting_approval")
    browser.screenshot("prompt")

    driver.find_element(By.LINK_TEXT, f"v{awaiting}").click()
    browser.wait_for(shown.title_is(f"{NAME} v{awaiting} · gepa-sidecar"), "the candidate page")
    flags = driver.find_element(By.CSS_SELECTOR, "section.flags")
    assert FLAG in flags.text
    assert flags.value_of_css_property("color") == "rgba(179, 38, 30, 1)"  # the page's red
    assert "regressed" in text_of(driver, "table.segments")
    browser.screenshot("candidate")

    approve = f"form[data-endpoint$='/candidates/{awaiting}/approve']"
    fill(driver, f"{approve} input[name=by]", "alice")
    acknowledged = driver.find_element(By.CSS_SELECTOR, f"{approve} input[type=checkbox]")
    driver.find_element(By.CSS_SELECTOR, f"{approve} button").click()
    assert driver.execute_script("return arguments[0].validationMessage", acknowledged)
    assert text_of(driver, "#flash") == ""  # the flags are not acknowledged: nothing was sent
    acknowledged.click()
    driver.find_element(By.CSS_SELECTOR, f"{approve} button").click()
    flash(browser, "Enter the admin token first")

    enter_token(browser, "not-the-token")
    driver.find_element(By.CSS_SELECTOR, f"{approve} button").click()
    flash(browser, r"Refused \(401\): the bearer token is not SIDECAR_ADMIN_TOKEN")
    assert text_of(driver, "#token-state") == "No token set."
    assert running.served_version() == active

    enter_token(browser, TOKEN)
    fill(driver, f"{approve} input[name=note]", "order numbers help")
    driver.find_element(By.CSS_SELECTOR, f"{approve} button").click()
    flash(browser, f"v{awaiting} approved: now active")
    assert "active" in text_of(driver, "h1 .badge")
    assert not driver.find_elements(By.CSS_SELECTOR, "form.decision")
    assert TOKEN not in driver.page_source
    assert not driver.get_cookies()
    wait_until(lambda: running.served_version() == awaiting, what=f"v{awaiting} served")
    browser.screenshot("approved")

    driver.find_element(By.LINK_TEXT, NAME).click()
    browser.wait_for(shown.title_is(f"{NAME} · gepa-sidecar"), "the prompt page")
    assert text_of(driver, ".active-version") == f"v{awaiting}"
    Select(driver.find_element(By.CSS_SELECTOR, "#rollback-to")).select_by_visible_text(
        f"v{active}"
    )
    fill(driver, "#rollback-by", "alice")
    fill(driver, "#rollback-reason", "returns regressed")
    driver.find_element(By.CSS_SELECTOR, "form.decision button").click()
    flash(browser, f"v{active} rolled back")
    assert text_of(driver, ".active-version") == f"v{active}"
    wait_until(lambda: running.served_version() == active, what=f"v{active} served again")
    browser.screenshot("rolled-back")

    driver.find_element(By.CSS_SELECTOR, "svg.lineage a.status-pool").click()
    browser.wait_for(shown.title_is(f"{NAME} v3 · gepa-sidecar"), "the pooled version's page")
    reject = "form[data-endpoint$='/candidates/3/reject']"
    fill(driver, f"{reject} input[name=by]", "bob")
    fill(driver, f"{reject} input[name=reason]", "apologies add nothing")
    driver.find_element(By.CSS_SELECTOR, f"{reject} button").click()
    flash(browser, "v3 rejected")
    assert "rejected" in text_of(driver, "h1 .badge")


def test_without_javascript_the_pages_read_and_nothing_can_post(running: Running) -> None:
    with chromium_driver(javascript=False) as driver:
        browser = Browser(driver, artifacts_dir(), prefix="no-javascript")
        browser.open(f"{running.url}/ui/prompts/{NAME}/versions/{running.world.awaiting}")
        assert FLAG in text_of(driver, "section.flags")
        assert "Quote the order number back to the customer." in text_of(driver, "table.diff")
        assert "need it: the admin token travels only in a request header" in text_of(
            driver, "main"
        )
        assert not [f for f in driver.find_elements(By.CSS_SELECTOR, "form") if f.is_displayed()]
        browser.screenshot("candidate")
