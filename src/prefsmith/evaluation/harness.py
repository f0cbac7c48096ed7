"""``prefsmith eval``: any scorer as a reward model, RewardBench-style.

Input columns: ``prompt``, ``chosen``, ``rejected`` (any shape of
:mod:`prefsmith.data.rows`), ``subset`` (rows without it count under ``all``), ``id``
(optional; the row position is used when absent). The official RewardBench ``filtered`` split
saved as JSON/JSONL/Parquet has these columns and runs unchanged.

Outputs (in the output folder): ``results.json`` (per scorer: per-subset and per-section
accuracy, overall, per-pair margins; settings, model fingerprints, timings), ``report.md``,
``accuracy_by_section.png`` and ``margins.png``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefsmith.data.rows import ScoringItem
from prefsmith.evaluation.scorers import ScorerSpec
from prefsmith.evaluation.sections import SubsetResult, section_of, section_scores, subset_results
from prefsmith.models.backend import (
    BatchingOptions,
    LogProbBackend,
    ResponseLogProbs,
    ScoreRequest,
    load_backend,
)
from prefsmith.models.cache import CachedBackend, LogProbCache
from prefsmith.models.loading import LoadOptions
from prefsmith.rewards.annotate import AnnotateOptions, read_input
from prefsmith.rewards.density_ratio import DensityRatioScorer, IncompatibleModelsError, Reduction


@dataclass
class ScorerResult:
    """Accuracy of one scorer.

    Attributes:
        scorer: Canonical scorer name.
        subsets: Per-subset ``{"correct", "total", "accuracy", "section"}``.
        sections: Section scores and ``Overall``.
        margins: Per-pair reward margin (chosen minus rejected), by pair id.
    """

    scorer: str
    subsets: dict[str, dict[str, Any]]
    sections: dict[str, float]
    margins: dict[str, float]


@dataclass
class EvalResult:
    """Everything an evaluation produced; serialized to ``results.json``."""

    data: str
    pairs: int
    settings: dict[str, Any]
    models: dict[str, dict[str, Any]]
    timings: dict[str, float]
    scorers: list[ScorerResult] = field(default_factory=list)
    routing: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def pair_ids(records_and_items: Sequence[tuple[Any, ScoringItem]]) -> list[str]:
    """Stable id of each pair: its ``id`` field, else its position."""
    return [str(rec.value.get("id", rec.index)) for rec, _ in records_and_items]


def score_result(
    spec: ScorerSpec,
    ids: Sequence[str],
    subsets: Sequence[str],
    strong: Sequence[ResponseLogProbs],
    weak: Sequence[ResponseLogProbs] | None,
    shared_tokens: bool,
) -> ScorerResult:
    """Margins and accuracies of one scorer from per-response log-probs (chosen, rejected, ...)."""
    margins: dict[str, float] = {}
    for k, pair_id in enumerate(ids):
        c, r = 2 * k, 2 * k + 1
        rewards = [
            spec.reward(strong[i], weak[i] if weak is not None else None, shared_tokens)
            for i in (c, r)
        ]
        margins[pair_id] = rewards[0] - rewards[1]
    results = subset_results(zip(subsets, margins.values(), strict=True))
    return ScorerResult(
        scorer=spec.name,
        subsets={s: _subset_json(r) for s, r in sorted(results.items())},
        sections=section_scores(results),
        margins=margins,
    )


def _subset_json(result: SubsetResult) -> dict[str, Any]:
    return {
        "correct": result.correct,
        "total": result.total,
        "accuracy": result.accuracy,
        "section": section_of(result.subset),
    }


def cached_backend(
    name: str,
    load_options: LoadOptions | None,
    batching: BatchingOptions | None,
    cache: LogProbCache | None,
) -> LogProbBackend:
    """A (lazily loading) backend, answering from ``cache`` when given."""
    backend = load_backend(name, load_options, batching)
    return CachedBackend(backend, cache) if cache is not None else backend


def evaluate(
    data: str | Path,
    specs: Sequence[ScorerSpec],
    strong: str,
    weak: str | None = None,
    load_options: LoadOptions | None = None,
    batching: BatchingOptions | None = None,
    cache: LogProbCache | None = None,
    system_prompt: str | None = None,
    customization: Customization | None = None,
) -> EvalResult:
    """Score every pair of ``data`` once per model and evaluate every scorer in ``specs``.

    With ``customization`` (customized density ratio, CDR), every scorer is evaluated twice:
    on the plain context and on the routed, criteria-and-exemplar context (named
    ``<scorer>+cdr``), and the routing (domain per pair, confusion matrix against the
    RewardBench sections) is recorded.
    """
    validated = read_input(data, AnnotateOptions(system_prompt=system_prompt))
    good = validated.good
    if any(item.kind != "pair" for _, item in good):
        raise ValueError(f"{data}: eval needs chosen/rejected pairs, not candidate lists")
    ids = pair_ids(good)
    subsets = [str(rec.value.get("subset", "all")) for rec, _ in good]
    requests = [ScoreRequest(item.context, resp) for _, item in good for resp in item.responses]

    needs_weak = any(spec.needs_weak for spec in specs)
    if needs_weak and not weak:
        raise IncompatibleModelsError("density-ratio and dpo scorers need --weak")
    strong_backend = cached_backend(strong, load_options, batching, cache)
    weak_backend = cached_backend(weak, load_options, batching, cache) if needs_weak else None
    shared = False
    if weak_backend is not None:
        for spec in specs:  # refuse e.g. token means across tokenizers before scoring
            if spec.kind == "density-ratio":
                DensityRatioScorer(strong_backend, weak_backend, spec.reduction)
        shared = DensityRatioScorer(strong_backend, weak_backend, Reduction.SUM).shared_tokens

    timings: dict[str, float] = {}
    start = time.perf_counter()
    strong_lp = strong_backend.score(requests)
    timings["strong_seconds"] = time.perf_counter() - start
    weak_lp = None
    if weak_backend is not None:
        start = time.perf_counter()
        weak_lp = weak_backend.score(requests)
        timings["weak_seconds"] = time.perf_counter() - start

    custom_lp: tuple[list[ResponseLogProbs], list[ResponseLogProbs] | None] | None = None
    routing = None
    if customization is not None:
        custom, routing = _customize(customization, good, ids, subsets, strong_backend)
        start = time.perf_counter()
        requests_c = [ScoreRequest(i.context, resp) for i in custom for resp in i.responses]
        strong_c = strong_backend.score(requests_c)
        weak_c = weak_backend.score(requests_c) if weak_backend is not None else None
        timings["customized_seconds"] = time.perf_counter() - start
        custom_lp = (strong_c, weak_c)

    models = {"strong": _model_info(strong_backend)}
    if weak_backend is not None:
        models["weak"] = _model_info(weak_backend)
    settings = {
        "scorers": [s.name for s in specs],
        "system_prompt": system_prompt,
        "shared_tokenizer": shared,
        "cache": str(cache.path) if cache is not None else None,
    }
    result = EvalResult(str(data), len(ids), settings, models, timings, routing=routing)
    for spec in specs:
        result.scorers.append(score_result(spec, ids, subsets, strong_lp, weak_lp, shared))
        if custom_lp is not None:
            custom_result = score_result(spec, ids, subsets, *custom_lp, shared)
            custom_result.scorer += "+cdr"
            result.scorers.append(custom_result)
    return result


@dataclass(frozen=True)
class Customization:
    """What the customized density ratio needs (see :mod:`prefsmith.routing`).

    Attributes:
        domains: The loaded domains file.
        router: Router name: ``embedding``, ``rules`` or ``lm`` (the strong model).
        exemplar_style: How exemplars enter the context: ``system``, ``turns`` or ``none``.
    """

    domains: Any
    router: str = "embedding"
    exemplar_style: str = "system"


def _customize(
    customization: Customization,
    good: Sequence[tuple[Any, ScoringItem]],
    ids: Sequence[str],
    subsets: Sequence[str],
    strong_backend: LogProbBackend,
) -> tuple[list[ScoringItem], dict[str, Any]]:
    from prefsmith.routing.customize import Customizer
    from prefsmith.routing.report import confusion_matrix, routing_agreement
    from prefsmith.routing.routers import make_router

    router = make_router(customization.router, customization.domains, strong_backend)
    customizer = Customizer(customization.domains, router, customization.exemplar_style)  # type: ignore[arg-type]
    items, fields = customizer([item for _, item in good])
    domains = [f["domain"] for f in fields]
    routing = {
        **customizer.settings(),
        "pairs": {i: f for i, f in zip(ids, fields, strict=True)},
        "confusion": confusion_matrix(domains, [section_of(s) for s in subsets]),
        "agreement_with_sections": routing_agreement(domains, subsets),
    }
    return items, routing


def _model_info(backend: Any) -> dict[str, Any]:
    info = {
        "name": backend.name,
        "fingerprint": backend.fingerprint,
        "dtype": backend.dtype,
        "template_sha256": hashlib.sha256(backend.template.encode()).hexdigest(),
    }
    if isinstance(backend, CachedBackend):
        info["computed"] = backend.computed
        info["cache_hits"] = backend.hits
    return info


def write_outputs(result: EvalResult, out_dir: str | Path) -> list[Path]:
    """Write ``results.json``, ``report.md`` and the PNG plots; return the paths."""
    from prefsmith.evaluation.plots import plot_margins, plot_sections

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "report.md"]
    paths[0].write_text(json.dumps(result.to_json(), indent=2))
    paths[1].write_text(markdown_report(result))
    paths.append(plot_sections(result, out / "accuracy_by_section.png"))
    paths.append(plot_margins(result, out / "margins.png"))
    return paths


SECTION_ORDER = ("Chat", "Chat Hard", "Safety", "Reasoning", "Overall")


def markdown_report(result: EvalResult) -> str:
    """A Markdown report: settings, section table, subset table."""
    names = [s.scorer for s in result.scorers]
    lines = [
        f"# Reward-model evaluation of `{result.data}`",
        "",
        f"{result.pairs} pairs. Models: "
        + ", ".join(f"{role} `{m['name']}` ({m['dtype']})" for role, m in result.models.items())
        + ".",
        "",
        "| section | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for section in SECTION_ORDER:
        if any(section in s.sections for s in result.scorers):
            cells = [_pct(s.sections.get(section)) for s in result.scorers]
            lines.append(f"| {section} | " + " | ".join(cells) + " |")
    lines += ["", "| subset | section | pairs | " + " | ".join(names) + " |"]
    lines.append("|---|---|---:|" + "---:|" * len(names))
    for subset, info in result.scorers[0].subsets.items():
        cells = [_pct(s.subsets[subset]["accuracy"]) for s in result.scorers]
        section = info["section"] or "(unknown)"
        lines.append(f"| {subset} | {section} | {info['total']} | " + " | ".join(cells) + " |")
    if result.routing is not None:
        confusion = result.routing["confusion"]
        names = sorted({d for row in confusion.values() for d in row})
        lines += ["", f"Router `{result.routing['router']}` (section x routed domain):", ""]
        lines += ["| section | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for section, row in confusion.items():
            lines.append(f"| {section} | " + " | ".join(str(row.get(n, 0)) for n in names) + " |")
    lines += ["", "Timings (s): " + json.dumps({k: round(v, 2) for k, v in result.timings.items()})]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"
