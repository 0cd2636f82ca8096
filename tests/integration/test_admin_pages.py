"""The admin page's HTML on a real server over a real SQLite file and PostgreSQL, read as a
client without JavaScript reads it: what each page shows, that it never holds the token, that
every text is escaped, and a one-line 404 for what does not exist. The browser drives the
decisions in test_admin_browser.py."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from sidecar.store.admin_reads import live_scores
from sidecar.store.candidates import candidate_means, insert_candidate
from tests.admin_world import FLAG, KEY, AdminWorld, stage
from tests.integration.test_http import serving
from tests.versions import NAME

TOKEN = "tok-the-page-must-never-hold"
PAGE = f"/ui/prompts/{NAME}"


@dataclass
class Site:
    client: httpx.Client
    engine: Engine
    world: AdminWorld


@pytest.fixture
def site(database_url: str, migrated_engine: Callable[[str], Engine]) -> Iterator[Site]:
    engine = migrated_engine(database_url)
    world = stage(engine)
    options = {
        "admin_token": SecretStr(TOKEN),
        "scores": lambda name: candidate_means(engine, name, KEY),
    }
    with serving(engine, **options) as client:
        yield Site(client, engine, world)


class Outline(HTMLParser):
    """The text of a page, and the elements (tag, attributes) it holds."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.text: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def words(self) -> str:
        return " ".join(" ".join(self.text).split())

    def having(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [
            a for t, a in self.elements if t == tag and all(a.get(k) == v for k, v in attrs.items())
        ]


def page(site: Site, path: str, status: int = 200) -> Outline:
    response = site.client.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert TOKEN not in response.text
    return Outline(response.text)


def test_the_overview_shows_each_prompt_its_active_version_counts_and_trend(site: Site) -> None:
    overview = page(site, "/")
    words = overview.words()
    assert f"Active version: v{site.world.active}" in words
    assert f"Awaiting approval: v{site.world.awaiting}" in words
    assert overview.having("a", href=f"http://testserver{PAGE}") or overview.having(
        "a", href=f"{site.client.base_url}{PAGE}"
    )
    assert re.search(r"awaiting approval.*?retired 1 0 0 1 0 0 1 1", words)
    assert len(overview.having("circle", **{"class": "point"})) > 10
    assert "live judge score" in words


def test_the_prompt_page_lists_versions_by_status_and_draws_the_lineage(site: Site) -> None:
    prompt = page(site, PAGE)
    words = prompt.words()
    for version in (1, 2, 3, site.world.awaiting):
        assert prompt.having("a", href=f"{site.client.base_url}{PAGE}/versions/{version}")
    assert "quote the order number; say refund times ⚑ 1 flagged" in words
    boxes = [a for t, a in prompt.elements if t == "a" and "node" in (a.get("class") or "")]
    assert len(boxes) == 4
    assert [b["class"] for b in boxes if "active" in (b["class"] or "").split()] == [
        "node status-active active"
    ]
    assert len(prompt.having("line", **{"class": "edge"})) == 3
    rollback = prompt.having("form", **{"class": "decision"})
    assert len(rollback) == 1 and "hidden" in rollback[0]
    assert rollback[0]["data-endpoint"] == f"/v1/prompts/{NAME}/rollback"


def test_the_candidate_page_shows_the_diff_evidence_flags_and_feedback(site: Site) -> None:
    candidate = page(site, f"{PAGE}/versions/{site.world.awaiting}")
    words = candidate.words()
    assert f"Changes against the active version v{site.world.active}" in words
    assert "Flagged: look twice before approving" in words and FLAG in words
    assert candidate.having("section", **{"class": "flags", "aria-labelledby": "flags-h"})
    assert "returns 14 -0.040 regressed" in words
    assert "billing 22 +0.210" in words
    assert "Mean delta +0.150" in words
    assert "p (better), wilcoxon-exact 0.0004" in words
    assert candidate.having("strong", **{"class": "decision-pass"})
    assert "0.50 — quotes the order number, but the apology is missing" in words
    assert "Quote the order number back to the customer." in words
    assert candidate.having("ins") and candidate.having("del")
    forms = candidate.having("form", **{"class": "decision"})
    assert [f["data-endpoint"] for f in forms] == [
        f"/v1/prompts/{NAME}/candidates/{site.world.awaiting}/approve",
        f"/v1/prompts/{NAME}/candidates/{site.world.awaiting}/reject",
    ]
    assert all("hidden" in f for f in forms)
    assert candidate.having("noscript")


def test_every_field_has_a_label_and_every_picture_a_title(site: Site) -> None:
    for path in ("/", PAGE, f"{PAGE}/versions/{site.world.awaiting}"):
        outline = page(site, path)
        labelled = {a["for"] for a in outline.having("label") if a.get("for")}
        fields = [a for t, a in outline.elements if t in ("input", "select")]
        assert fields or path == "/"
        for field in fields:
            assert field.get("id") in labelled or field.get("type") == "checkbox", field
        for svg in outline.having("svg"):
            assert svg["role"] == "img" and svg["aria-labelledby"], svg
        assert outline.having("main", id="main") and outline.having("html", lang="en")


def test_the_trend_reads_judged_events_received_since_and_at_most_limit(site: Site) -> None:
    now = datetime.now(UTC)
    week = live_scores(site.engine, NAME, now - timedelta(days=7))
    assert len(week) == (36 + 35) * 4 and week == sorted(week)
    assert {version for _, _, version in week} == {1, 2}
    since_v2 = live_scores(site.engine, NAME, now - timedelta(hours=40))  # v2 was received 36h ago
    assert {version for _, _, version in since_v2} == {2}
    assert len(live_scores(site.engine, NAME, now - timedelta(days=7), limit=10)) == 10
    assert live_scores(site.engine, "another-prompt", now - timedelta(days=7)) == []


def test_no_decision_form_on_a_version_past_deciding(site: Site) -> None:
    active = page(site, f"{PAGE}/versions/{site.world.active}")
    assert not active.having("form", **{"class": "decision"})
    assert "against its parent v1" in active.words()


def test_every_text_is_escaped(site: Site) -> None:
    hostile = "<script>alert(1)</script> & <b>bold</b>"
    insert_candidate(
        site.engine, NAME, {"system_prompt": hostile}, [1], None, hostile, [hostile],
        datetime.now(UTC),
    )  # fmt: skip
    for path in (PAGE, f"{PAGE}/versions/5"):
        response = site.client.get(path)
        assert response.status_code == 200
        assert "<script>alert" not in response.text and "<b>bold" not in response.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/ui/prompts/nope", "no prompt named 'nope'"),
        (f"{PAGE}/versions/99", f"{NAME} has no version 99"),
        ("/ui/prompts/a%00b", "no prompt named 'a\\x00b'"),
    ],
)
def test_what_does_not_exist_is_a_one_line_404(site: Site, path: str, reason: str) -> None:
    missing = page(site, path, status=404)
    assert reason in missing.words()


def test_a_version_that_is_not_a_number_is_refused(site: Site) -> None:
    response = site.client.get(f"{PAGE}/versions/latest")
    assert response.status_code == 422
    assert "version" in response.json()["detail"]


def test_the_script_and_style_are_served(site: Site) -> None:
    script = site.client.get("/ui/static/admin.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "sessionStorage" in script.text and "Authorization" in script.text
    assert site.client.get("/ui/static/admin.css").status_code == 200
    assert site.client.get("/ui/static/../pages.py").status_code == 404


def test_without_a_database_the_pages_answer_503() -> None:
    with serving(None) as client:
        response = client.get("/")
    assert response.status_code == 503
    assert response.json() == {"detail": "this server has no database"}
