"""Reading what the optimizer did: one candidate as `show --json` prints it, the lineage as a
tree (version, score, what changed), and a per-component diff of two versions."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from sidecar.store.database import aware
from sidecar.store.tables import Candidate


def candidate_view(candidate: Candidate, score: tuple[float, int] | None = None) -> dict[str, Any]:
    """The fields `show --json` and `candidates --json` promise, and a few more."""
    return {
        "name": candidate.prompt_name,
        "version": candidate.version,
        "status": candidate.status,
        "components": dict(candidate.components),
        "parents": list(candidate.parents),
        "flags": list(candidate.flags),
        "evidence": candidate.evidence,
        "mutation_summary": candidate.mutation_summary,
        "origin_run_id": candidate.origin_run_id,
        "sha256": candidate.sha256,
        "created_at": aware(candidate.created_at).isoformat(),
        "approved_by": candidate.approved_by,
        "mean_score": round(score[0], 4) if score else None,
        "evaluations": score[1] if score else 0,
    }


def lineage_lines(
    candidates: Mapping[int, Candidate], scores: Mapping[int, tuple[float, int]]
) -> list[str]:
    """A text tree: each version under its first parent, with status, score and change."""
    children: dict[int | None, list[int]] = {}
    for version, candidate in sorted(candidates.items()):
        parent = candidate.parents[0] if candidate.parents else None
        children.setdefault(parent if parent in candidates else None, []).append(version)
    lines: list[str] = []

    def walk(version: int, depth: int) -> None:
        candidate = candidates[version]
        score = scores.get(version)
        shown = f"{score[0]:.3f} on {score[1]}" if score else "unscored"
        extra = (
            f" + v{', v'.join(map(str, candidate.parents[1:]))}"
            if len(candidate.parents) > 1
            else ""
        )
        flags = f"  FLAGGED: {len(candidate.flags)}" if candidate.flags else ""
        lines.append(
            f"{'    ' * depth}v{version}{extra}  [{candidate.status}]  score {shown}  "
            f"{candidate.mutation_summary or ''}{flags}"
        )
        for child in children.get(version, []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    return lines


def component_diff(a: Candidate, b: Candidate) -> str:
    """A unified diff per component (word-wrapped lines compare better than one long line)."""
    parts = []
    for name in sorted(set(a.components) | set(b.components)):
        before = a.components.get(name, "").replace(". ", ".\n").splitlines(keepends=False)
        after = b.components.get(name, "").replace(". ", ".\n").splitlines(keepends=False)
        diff = list(
            difflib.unified_diff(
                before, after, f"v{a.version}/{name}", f"v{b.version}/{name}", lineterm=""
            )
        )
        parts.append("\n".join(diff) if diff else f"{name}: unchanged")
    return "\n".join(parts)
