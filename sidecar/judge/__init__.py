"""The LLM judge: a score in 0..1 and natural-language feedback for each output, per rubric."""

from sidecar.judge.judge import Judge, PairwiseResult
from sidecar.judge.verdict import InvalidReply, Verdict

__all__ = ["InvalidReply", "Judge", "PairwiseResult", "Verdict"]
