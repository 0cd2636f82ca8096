"""Our GEPA engine against the `gepa` library (0.1.4, dev-only, through its adapter API) in the
hard simulated world (tests/hard_world.py): two components, segment facts that help one segment
and hurt the others, a noisy judge, distractor feedback. Same events, same budgets, same seeds.

The question it answers: does our engine reach an equal or better held-out score than gepa at
half gepa's paid metric calls? Held-out score = the hidden (noise-free) judge on held-out
questions of every segment, of each run's best candidate (ours: the report's best version;
gepa: `best_candidate`); paid = metric calls (a task call plus its judgment). Each engine runs
at every budget, so the figures are a curve of held-out score against paid calls.

Also: warm runs on shifted traffic (the store of the cold run at the largest budget, new traffic
heavy in returns and account) against cold runs on the same shifted traffic. A run that raises
is counted as crashed, with its message; the rest of the bench goes on. With `--planted`, one
first-traffic message carries an instruction the reflection model may copy; the figures count
the best candidates that carry it.

    .venv/bin/python bench/optimize_parity.py [--seeds 10] [--budgets 150,300,600] [--planted]
        [--plot parity.png]

One JSON line of figures; ratios are ours over gepa (or warm over cold) in this same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.parity_runs import OursInWorld, Outcome, Server, gepa_run
from tests.hard_traffic import traffic_questions
from tests.hard_world import FIRST_MIX, HARD_SEED, SHIFTED_MIX, hidden_score

Row = dict[str, Any]


class Bench:
    """Runs every (engine, budget, seed) and keeps the outcomes; a crash is a row, not an end."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[Row] = []
        self.crashes: list[Row] = []

    def attempt(self, kind: str, seed: int, budget: int, run: Callable[[], Outcome]) -> None:
        started = time.monotonic()
        try:
            outcome = run()
        except Exception as exc:  # counted, with its message: one crash must not end the bench
            self.crash(kind, seed, budget, exc)
            return
        self.rows.append(
            {
                "run": kind,
                "seed": seed,
                "budget": budget,
                "paid_calls": outcome.paid_calls,
                "hidden": round(outcome.hidden, 4),
                "copied_planted_code": "FREE100" in " ".join(outcome.best.values()),
                "seconds": round(time.monotonic() - started, 1),
                **outcome.notes,
            }
        )

    def crash(self, kind: str, seed: int, budget: int | None, exc: Exception) -> None:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        message = f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})"
        self.crashes.append({"run": kind, "seed": seed, "budget": budget, "error": message})

    def seed(self, seed: int) -> None:
        """Every run of one world seed, against one server process."""
        args = self.args
        first = traffic_questions(args.events, FIRST_MIX, seed=seed, planted=args.planted)
        shifted = traffic_questions(args.events, SHIFTED_MIX, seed=seed + 100)
        overrides = {"optimize_window_events": args.events, "optimize_patience": args.patience}
        with Server(seed) as server, tempfile.TemporaryDirectory() as directory:
            for budget in args.budgets:
                self.attempt(
                    "gepa", seed, budget, partial(gepa_run, server.api_base, first, budget, seed)
                )
                ours = OursInWorld(
                    server.api_base, _folder(directory, f"ours-{budget}"), seed, **overrides
                )
                self.attempt("ours", seed, budget, partial(ours.cold, first, budget, seed))
                if budget == max(args.budgets):
                    warm = partial(ours.warm, shifted, args.warm_budget, seed + 100)
                    self.attempt("ours_warm", seed, args.warm_budget, warm)
                ours.close()
            cold = OursInWorld(
                server.api_base, _folder(directory, "cold-shifted"), seed, **overrides
            )
            run = partial(cold.cold, shifted, args.warm_budget, seed + 100)
            self.attempt("ours_cold_shifted", seed, args.warm_budget, run)
            cold.close()


def _folder(parent: str, name: str) -> Path:
    folder = Path(parent) / name
    folder.mkdir()
    return folder


def _mean(values: list[float]) -> float | None:
    return round(statistics.mean(values), 4) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def point(rows: list[Row], kind: str, budget: int) -> Row:
    """Mean paid calls and held-out score of one engine at one budget, with the per-seed spread."""
    runs = [r for r in rows if r["run"] == kind and r["budget"] == budget]
    hidden = [r["hidden"] for r in runs]
    return {
        "budget": budget,
        "runs": len(runs),
        "paid_calls": _mean([r["paid_calls"] for r in runs]),
        "hidden": _mean(hidden),
        "hidden_sd": round(statistics.stdev(hidden), 4) if len(hidden) > 1 else 0.0,
        "hidden_min": min(hidden, default=None),
        "hidden_max": max(hidden, default=None),
    }


def figures(bench: Bench, seconds: float) -> Row:
    """The JSON line: curves, the half-budget headline, warm against cold, crashes."""
    args, rows = bench.args, bench.rows
    curves = {kind: [point(rows, kind, b) for b in args.budgets] for kind in ("ours", "gepa")}
    full, half = max(args.budgets), max(args.budgets) // 2
    theirs = point(rows, "gepa", full)
    mine_half = point(rows, "ours", half) if half in args.budgets else None
    mine_full = point(rows, "ours", full)
    warm = point(rows, "ours_warm", args.warm_budget)
    cold = point(rows, "ours_cold_shifted", args.warm_budget)
    headline = {
        "gepa_budget": full,
        "gepa_paid_calls": theirs["paid_calls"],
        "gepa_hidden": theirs["hidden"],
        "ours_full_paid_calls": mine_full["paid_calls"],
        "ours_full_hidden": mine_full["hidden"],
        "ours_full_hidden_vs_gepa": _ratio(mine_full["hidden"], theirs["hidden"]),
        "ours_full_calls_vs_gepa": _ratio(mine_full["paid_calls"], theirs["paid_calls"]),
    }
    if mine_half is not None:
        headline |= {
            "ours_half_paid_calls": mine_half["paid_calls"],
            "ours_half_hidden": mine_half["hidden"],
            "ours_half_hidden_vs_gepa": _ratio(mine_half["hidden"], theirs["hidden"]),
            "ours_half_calls_vs_gepa": _ratio(mine_half["paid_calls"], theirs["paid_calls"]),
            "ours_half_equal_or_better": (mine_half["hidden"] or 0) >= (theirs["hidden"] or 0),
        }
    return {
        "bench": "optimize_parity",
        "world": "hard",
        "seeds": args.seeds,
        "events": args.events,
        "budgets": args.budgets,
        "seed_hidden": round(hidden_score(HARD_SEED), 4),
        "optimum_hidden": 1.0,
        "headline": headline,
        "curves": curves,
        "warm_vs_cold": {
            "budget": args.warm_budget,
            "warm_paid_calls": warm["paid_calls"],
            "cold_paid_calls": cold["paid_calls"],
            "calls_ratio": _ratio(warm["paid_calls"], cold["paid_calls"]),
            "warm_hidden": warm["hidden"],
            "cold_hidden": cold["hidden"],
            "hidden_ratio": _ratio(warm["hidden"], cold["hidden"]),
        },
        "planted": args.planted,
        "best_copies_planted_code": {
            kind: sum(r["copied_planted_code"] for r in rows if r["run"] == kind)
            for kind in ("ours", "gepa", "ours_warm", "ours_cold_shifted")
        },
        "crashes": {"count": len(bench.crashes), "runs": len(rows) + len(bench.crashes)},
        "crashed": bench.crashes,
        "seconds": round(seconds, 1),
        "per_run": rows,
    }


def plot(result: Row, rows: list[Row], path: Path) -> None:
    """Held-out score against paid metric calls, one line per engine (means over seeds), each
    seed's run as a faint dot and the seeds' min-max as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for kind, colour in (("ours", "tab:blue"), ("gepa", "tab:orange")):
        curve = [p for p in result["curves"][kind] if p["runs"]]
        x = [p["paid_calls"] for p in curve]
        axes.plot(x, [p["hidden"] for p in curve], marker="o", color=colour, label=kind)
        low, high = [p["hidden_min"] for p in curve], [p["hidden_max"] for p in curve]
        axes.fill_between(x, low, high, color=colour, alpha=0.15)
        runs = [r for r in rows if r["run"] == kind]
        axes.scatter(
            [r["paid_calls"] for r in runs],
            [r["hidden"] for r in runs],
            color=colour,
            alpha=0.3,
            s=12,
        )
    axes.axhline(result["seed_hidden"], color="grey", linestyle=":", label="seed prompt")
    axes.axhline(result["optimum_hidden"], color="grey", linestyle="--", label="optimum")
    axes.set_xlabel("paid metric calls (task call + judgment)")
    axes.set_ylabel("held-out score of the best candidate (hidden judge)")
    axes.set_title(f"Hard world, {result['seeds']} seeds: our engine vs gepa 0.1.4")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", default="150,300,600", help="comma-separated metric calls")
    parser.add_argument("--warm-budget", type=int, default=None, help="default: half the largest")
    parser.add_argument("--events", type=int, default=48, help="judged events per traffic mix")
    parser.add_argument("--patience", type=int, default=20, help="our engine's patience")
    parser.add_argument(
        "--planted", action="store_true", help="plant an instruction in the first traffic"
    )
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG here")
    args = parser.parse_args()
    args.budgets = sorted({int(b) for b in args.budgets.split(",")})
    args.warm_budget = args.warm_budget or max(args.budgets) // 2
    started = time.monotonic()
    bench = Bench(args)
    for seed in range(1, args.seeds + 1):
        try:
            bench.seed(seed)
        except Exception as exc:  # the server of this seed: the other seeds still run
            bench.crash("server", seed, None, exc)
    result = figures(bench, time.monotonic() - started)
    if args.plot is not None:
        plot(result, bench.rows, args.plot)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
