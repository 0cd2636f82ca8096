"""Whether a frontier candidate is shown to a person as `proposed`, and the evidence it carries.

Both versions were replayed through the same task path and judged the same way on the same
Pareto events (like for like), so the comparison is paired, event by event. A candidate is
proposed only when it was scored on the *whole* Pareto set (no cherry-picked subset survives
a budget cut) and beats the champion by more than a margin on the mean paired difference. The
exact one-sided sign test p-value (ties within epsilon dropped) is reported for a person to
weigh. The Pareto set also selected the candidate, so these figures lean optimistic; the shadow
gate measures on fresh traffic.

The means weigh each event by the traffic it stands for (`weights.py`), so a segment ingest
kept whole beside a common one kept at 5% does not decide the margin; wins, losses, ties and
the sign test count events (what was observed), and only inform.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sidecar.optimize.weights import Weights, weighted_mean


@dataclass(frozen=True)
class Evidence:
    """A candidate against the champion on the Pareto events both were scored on."""

    pareto_size: int
    n: int
    pareto_mean: float
    champion_mean: float
    mean_delta: float
    wins: int
    losses: int
    ties: int
    p_value: float

    @property
    def partial(self) -> bool:
        return self.n < self.pareto_size

    def as_dict(self) -> dict[str, Any]:
        values = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}
        return {**values, "pareto_scored": self.n, "partial": self.partial}


def sign_test_p(wins: int, losses: int) -> float:
    """P(at least `wins` wins of wins + losses fair coin flips): how often chance alone does
    as well as the candidate did."""
    trials = wins + losses
    if trials == 0:
        return 1.0
    return float(sum(math.comb(trials, k) for k in range(wins, trials + 1)) / 2**trials)


def paired_evidence(
    candidate: Mapping[int, float],
    champion: Mapping[int, float],
    pareto: Sequence[int],
    epsilon: float = 0.0,
    weights: Weights | None = None,
) -> Evidence:
    """The paired comparison on the Pareto events both were scored on; means by weight."""
    common = [event for event in pareto if event in candidate and event in champion]
    deltas = {event: candidate[event] - champion[event] for event in common}
    wins = sum(1 for d in deltas.values() if d > epsilon)
    losses = sum(1 for d in deltas.values() if d < -epsilon)
    n = len(common)
    return Evidence(
        pareto_size=len(pareto),
        n=n,
        pareto_mean=weighted_mean({e: candidate[e] for e in common}, weights),
        champion_mean=weighted_mean({e: champion[e] for e in common}, weights),
        mean_delta=weighted_mean(deltas, weights),
        wins=wins,
        losses=losses,
        ties=n - wins - losses,
        p_value=sign_test_p(wins, losses),
    )


def proposal_verdict(evidence: Evidence, margin: float) -> tuple[bool, str]:
    """(propose it?, why), in words a person reads next to the candidate."""
    if evidence.n == 0:
        return False, "not scored on the Pareto set"
    if evidence.partial:
        return False, (
            f"partial evidence: scored on {evidence.n} of {evidence.pareto_size} Pareto events"
        )
    if evidence.mean_delta <= margin:
        return False, (
            f"mean paired gain {evidence.mean_delta:+.3f} over the champion is not above the "
            f"margin {margin:.3f}"
        )
    return True, (
        f"beats the champion by {evidence.mean_delta:+.3f} on all {evidence.n} Pareto events "
        f"({evidence.wins} better, {evidence.losses} worse, {evidence.ties} tied; sign test "
        f"p={evidence.p_value:.3g})"
    )
