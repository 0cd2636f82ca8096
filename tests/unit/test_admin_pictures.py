"""The admin page's pictures and diff, as pure functions: the score trend's buckets, the
lineage's layers and arrows, and the side-by-side rows."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

from sidecar.api.charts import (
    Judged,
    LineageNode,
    lineage_layers,
    lineage_svg,
    trend_points,
    trend_svg,
)
from sidecar.api.side_by_side import side_by_side

T0 = datetime(2026, 11, 1, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"


def node(version: int, *parents: int, status: str = "pool", flagged: bool = False) -> LineageNode:
    return LineageNode(version, parents, status, None, f"change {version}", flagged)


def test_trend_means_each_bucket_and_leaves_empty_ones_out() -> None:
    judged = [Judged(T0, 0.2, 1), Judged(T0 + timedelta(minutes=1), 0.4, 1)]
    judged += [Judged(T0 + timedelta(hours=10), 0.9, 2)]
    points = trend_points(judged, buckets=10)
    assert [(round(p.mean, 3), p.n, p.versions) for p in points] == [(0.3, 2, (1,)), (0.9, 1, (2,))]
    assert points[0].start == T0


def test_trend_svg_is_well_formed_and_marks_the_newer_version() -> None:
    judged = [Judged(T0 + timedelta(hours=h), 0.5, 1 if h < 5 else 2) for h in range(10)]
    svg = trend_svg(trend_points(judged), title="care <live>")
    root = ElementTree.fromstring(svg)
    assert root.find(f"{SVG}title").text == "care <live>"
    assert len(root.findall(f"{SVG}circle")) == 10
    assert [t.text for t in root.findall(f"{SVG}text") if t.get("class") == "change-label"] == [
        "v2"
    ]
    assert "10 judged events" in root.find(f"{SVG}desc").text


def test_an_empty_trend_says_so() -> None:
    root = ElementTree.fromstring(trend_svg([], title="t"))
    assert "no judged traffic yet" in "".join(root.itertext())


def test_lineage_layers_put_each_version_below_its_deepest_parent() -> None:
    nodes = {1: node(1), 2: node(2, 1), 3: node(3, 2), 4: node(4, 1, 3), 5: node(5, 99)}
    assert lineage_layers(nodes) == [[1, 5], [2], [3], [4]]


def test_lineage_survives_a_cycle_in_bad_data() -> None:
    assert lineage_layers({1: node(1, 2), 2: node(2, 1)}) == [[2], [1]]


def test_lineage_svg_links_each_version_and_draws_an_arrow_per_parent() -> None:
    nodes = {1: node(1, status="retired"), 2: node(2, 1, status="active"), 3: node(3, 1, 2)}
    nodes[3] = LineageNode(3, (1, 2), "awaiting_approval", 0.8123, "a <b> & c", True)
    svg = lineage_svg(nodes, lambda v: f"/ui/prompts/p/versions/{v}", active=2)
    root = ElementTree.fromstring(svg)
    links = root.findall(f"{SVG}a")
    assert [a.get("href") for a in links] == [f"/ui/prompts/p/versions/{v}" for v in (1, 2, 3)]
    assert len(root.findall(f"{SVG}line")) == 3
    assert "active" in links[1].get("class").split()
    assert "flagged" in links[2].get("class").split()
    text = "".join(links[2].itertext())
    assert "v3 ⚑ · 0.812" in text and "a <b> & c" in text and "FLAGGED" in text


def test_side_by_side_aligns_sentences_and_marks_the_changed_words() -> None:
    before = "Be kind. Answer briefly. Never guess."
    after = "Be kind. Answer in detail. Never guess. Cite the order."
    rows = side_by_side(before, after)
    assert [r.kind for r in rows] == ["same", "changed", "same", "added"]
    changed = rows[1]
    assert [(p.text, p.marked) for p in changed.left] == [("Answer", False), ("briefly.", True)]
    assert [(p.text, p.marked) for p in changed.right] == [("Answer", False), ("in detail.", True)]
    assert rows[3].left == () and rows[3].right[0].text == "Cite the order."


def test_side_by_side_of_removed_text() -> None:
    rows = side_by_side("Keep. Drop this.", "Keep.")
    assert [(r.kind, bool(r.left), bool(r.right)) for r in rows] == [
        ("same", True, True),
        ("removed", True, False),
    ]
    assert not re.search("Drop", "".join(p.text for r in rows for p in r.right))
