"""The admin page's pictures, drawn as SVG on the server: a prompt's live score over time and
its lineage graph. No script and no image library: the markup reads without JavaScript, and a
screen reader gets each picture's title, description and every point's `<title>`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

TREND_WIDTH = 720
TREND_HEIGHT = 220
MARGIN_LEFT = 44
MARGIN_RIGHT = 16
MARGIN_TOP = 16
MARGIN_BOTTOM = 36
TREND_BUCKETS = 48

NODE_WIDTH = 190
NODE_HEIGHT = 46
LAYER_GAP = 64
NODE_GAP = 24
SUMMARY_CHARS = 27


@dataclass(frozen=True, slots=True)
class Judged:
    """One live judgment of production traffic: when, its score, the version that answered."""

    at: datetime
    score: float
    version: int


@dataclass(frozen=True, slots=True)
class TrendPoint:
    start: datetime
    mean: float
    n: int
    versions: tuple[int, ...]


def trend_points(judged: Sequence[Judged], buckets: int = TREND_BUCKETS) -> list[TrendPoint]:
    """The judgments' mean score per time bucket (the span split in `buckets`); empty buckets are
    left out, so the line joins the buckets that have judgments."""
    if not judged:
        return []
    first = min(j.at for j in judged)
    last = max(j.at for j in judged)
    width = max((last - first) / buckets, timedelta(seconds=1))
    grouped: dict[int, list[Judged]] = {}
    for judgment in judged:
        index = min(int((judgment.at - first) / width), buckets - 1)
        grouped.setdefault(index, []).append(judgment)
    return [
        TrendPoint(
            start=first + width * index,
            mean=sum(j.score for j in members) / len(members),
            n=len(members),
            versions=tuple(sorted({j.version for j in members})),
        )
        for index, members in sorted(grouped.items())
    ]


def trend_svg(points: Sequence[TrendPoint], title: str) -> str:
    """A line of mean live scores (0 to 1) over time; a dashed line where a newer version starts
    answering. Its description states the range in words for those who cannot see it."""
    plot_width = TREND_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = TREND_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" role="img" '
        f'viewBox="0 0 {TREND_WIDTH} {TREND_HEIGHT}" aria-labelledby="trend-title trend-desc">',
        f'<title id="trend-title">{escape(title)}</title>',
        f'<desc id="trend-desc">{escape(_trend_description(points))}</desc>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = MARGIN_TOP + plot_height * (1 - tick)
        parts.append(
            f'<line class="grid" x1="{MARGIN_LEFT}" y1="{y:.1f}" '
            f'x2="{TREND_WIDTH - MARGIN_RIGHT}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{tick:g}</text>'
        )
    if not points:
        parts.append(
            f'<text class="empty" x="{TREND_WIDTH / 2}" y="{TREND_HEIGHT / 2}" '
            'text-anchor="middle">no judged traffic yet</text></svg>'
        )
        return "".join(parts)
    first, last = points[0].start, points[-1].start
    span = (last - first).total_seconds() or 1.0

    def x_of(point: TrendPoint) -> float:
        offset = (point.start - first).total_seconds() / span if len(points) > 1 else 0.5
        return MARGIN_LEFT + plot_width * offset

    def y_of(point: TrendPoint) -> float:
        return MARGIN_TOP + plot_height * (1 - max(0.0, min(1.0, point.mean)))

    serving: int | None = None
    for point in points:
        newest = max(point.versions)
        if serving is not None and newest != serving:
            x = x_of(point)
            parts.append(
                f'<line class="change" x1="{x:.1f}" y1="{MARGIN_TOP}" x2="{x:.1f}" '
                f'y2="{MARGIN_TOP + plot_height}"/><text class="change-label" x="{x + 3:.1f}" '
                f'y="{MARGIN_TOP + 10}">v{newest}</text>'
            )
        serving = newest
    line = " ".join(f"{x_of(p):.1f},{y_of(p):.1f}" for p in points)
    parts.append(f'<polyline class="line" points="{line}"/>')
    for point in points:
        versions = ", ".join(f"v{v}" for v in point.versions)
        parts.append(
            f'<circle class="point" cx="{x_of(point):.1f}" cy="{y_of(point):.1f}" r="3">'
            f"<title>{_when(point.start, last - first)}: mean {point.mean:.3f} over {point.n} "
            f"({escape(versions)})</title></circle>"
        )
    bottom = TREND_HEIGHT - 12
    parts.append(
        f'<text class="axis" x="{MARGIN_LEFT}" y="{bottom}">{_when(first, last - first)}</text>'
        f'<text class="axis" x="{TREND_WIDTH - MARGIN_RIGHT}" y="{bottom}" '
        f'text-anchor="end">{_when(last, last - first)}</text></svg>'
    )
    return "".join(parts)


def _when(moment: datetime, span: timedelta = timedelta(days=1)) -> str:
    """A time as precise as the plot's span needs: seconds when it covers less than two hours."""
    return moment.strftime("%H:%M:%S" if span < timedelta(hours=2) else "%Y-%m-%d %H:%M")


def _trend_description(points: Sequence[TrendPoint]) -> str:
    if not points:
        return "No judged traffic yet."
    means = [p.mean for p in points]
    total = sum(p.n for p in points)
    span = points[-1].start - points[0].start
    return (
        f"{total} judged events from {_when(points[0].start, span)} to "
        f"{_when(points[-1].start, span)}: "
        f"mean per period between {min(means):.3f} and {max(means):.3f}, "
        f"last {means[-1]:.3f}."
    )


@dataclass(frozen=True, slots=True)
class LineageNode:
    version: int
    parents: tuple[int, ...]
    status: str
    score: float | None
    summary: str | None
    flagged: bool


def lineage_layers(nodes: Mapping[int, LineageNode]) -> list[list[int]]:
    """Versions by generation: a version sits one layer below its deepest known parent (a
    parent outside `nodes` counts as none), so every edge points down."""
    depth: dict[int, int] = {}

    def depth_of(version: int, seen: frozenset[int]) -> int:
        if version not in depth:
            parents = [p for p in nodes[version].parents if p in nodes and p not in seen]
            below = seen | {version}
            depth[version] = 1 + max((depth_of(p, below) for p in parents), default=-1)
        return depth[version]

    layers: dict[int, list[int]] = {}
    for version in sorted(nodes):
        layers.setdefault(depth_of(version, frozenset()), []).append(version)
    return [layers[d] for d in sorted(layers)]


def lineage_svg(
    nodes: Mapping[int, LineageNode], link: Callable[[int], str], active: int | None
) -> str:
    """Each version a box (version, status, score, what its mutation changed), an arrow from
    each parent; `link(version)` is its page's address. Flagged versions and
    the active one are marked in the box's class and its text, not by colour alone."""
    layers = lineage_layers(nodes)
    widest = max((len(layer) for layer in layers), default=1)
    width = widest * (NODE_WIDTH + NODE_GAP) + NODE_GAP
    height = len(layers) * (NODE_HEIGHT + LAYER_GAP) + NODE_GAP
    where: dict[int, tuple[float, float]] = {}
    for row, layer in enumerate(layers):
        offset = (width - len(layer) * (NODE_WIDTH + NODE_GAP) + NODE_GAP) / 2
        for column, version in enumerate(layer):
            where[version] = (
                offset + column * (NODE_WIDTH + NODE_GAP),
                NODE_GAP + row * (NODE_HEIGHT + LAYER_GAP),
            )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" role="img" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
        'aria-labelledby="lineage-title">',
        f'<title id="lineage-title">Lineage of {len(nodes)} versions: each arrow goes from a '
        "parent to the version its mutation made</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>',
    ]
    for version, node in sorted(nodes.items()):
        for parent in node.parents:
            if parent in where:
                px, py = where[parent]
                cx, cy = where[version]
                parts.append(
                    f'<line class="edge" x1="{px + NODE_WIDTH / 2:.1f}" '
                    f'y1="{py + NODE_HEIGHT:.1f}" x2="{cx + NODE_WIDTH / 2:.1f}" y2="{cy:.1f}" '
                    'marker-end="url(#arrow)"/>'
                )
    for version, node in sorted(nodes.items()):
        x, y = where[version]
        classes = " ".join(
            ["node", f"status-{node.status}"]
            + (["active"] if version == active else [])
            + (["flagged"] if node.flagged else [])
        )
        score = "unscored" if node.score is None else f"{node.score:.3f}"
        marks = (" ★" if version == active else "") + (" ⚑" if node.flagged else "")
        summary = node.summary or "(seed)"
        short = summary if len(summary) <= SUMMARY_CHARS else summary[: SUMMARY_CHARS - 1] + "…"
        tooltip = (
            f"v{version} [{node.status}] score {score}"
            f"{' — active' if version == active else ''}{' — FLAGGED' if node.flagged else ''}"
            f": {summary}"
        )
        parts.append(
            f'<a href="{escape(link(version))}" class="{classes}">'
            f"<title>{escape(tooltip)}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="6"/>'
            f'<text x="{x + 8:.1f}" y="{y + 18:.1f}" class="head">v{version}{marks} · '
            f"{escape(score)}</text>"
            f'<text x="{x + 8:.1f}" y="{y + 36:.1f}" class="summary">{escape(short)}</text></a>'
        )
    parts.append("</svg>")
    return "".join(parts)
