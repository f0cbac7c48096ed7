"""Evaluation results: what :func:`~prefsmith.evaluation.harness.evaluate` returns and writes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ScorerResult:
    """RewardBench-style accuracy of one scorer.

    Attributes:
        scorer: Scorer name (its spec).
        subsets: Per-subset ``{"correct", "total", "accuracy", "section"}``.
        sections: Section scores and ``Overall``.
        margins: Per-pair reward margin (chosen minus rejected), by pair id; for K-wise rows
            the worst correct minus the best incorrect reward.
        benchmark: K-wise rows only: ``kind`` (``rewardbench2``, ``rmbench`` or ``kwise``)
            and that benchmark's details (Ties' terms and each prompt's credit; RM-Bench's
            per-domain matrices); see :mod:`prefsmith.evaluation.kwise`.
    """

    scorer: str
    subsets: dict[str, dict[str, Any]]
    sections: dict[str, float]
    margins: dict[str, float]
    benchmark: dict[str, Any] | None = None


@dataclass
class EvalResult:
    """Everything an evaluation produced; serialized to ``results.json``.

    Attributes:
        data: The evaluated file.
        pairs: Pairs evaluated.
        settings: Scorers and run settings.
        models: Each model's name, fingerprint, dtype, template hash, computed/cached counts.
        timings: Seconds per scorer.
        scorers: One result per scorer.
        routing: With a customization: router settings, domain per pair, confusion matrix.
        fit: With ``--fit``: fitted models, held-out calibration (ECE, reliability bins) and
            comparisons with the baseline (see :mod:`prefsmith.evaluation.fit`).
    """

    data: str
    pairs: int
    settings: dict[str, Any]
    models: dict[str, dict[str, Any]]
    timings: dict[str, float]
    scorers: list[ScorerResult] = field(default_factory=list)
    routing: dict[str, Any] | None = None
    fit: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
