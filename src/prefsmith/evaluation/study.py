"""``prefsmith study``: every ordered strong/weak pair of M models at the cost of M passes.

Each model scores every response once (through the log-prob cache); every ordered pair's
density-ratio accuracy is then computed from the stored log-probs. Each model is scored with
its own chat template, so the study's reductions are the string-level ``sum`` and
``mean-char`` (defined whatever the tokenizers and templates).

Performance gap of a pair = strength(strong) - strength(weak), where a model's strength is a
user-supplied benchmark score (``--strength FILE``: JSON ``{model: score}``) or, by default,
the model's own reference-free accuracy on the same pairs (``logprob:mean``, the mean token
log-likelihood ranking chosen over rejected). The study reports the Spearman correlation of gap
and pair accuracy over all ordered pairs.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefsmith.evaluation.harness import cached_backend, pair_ids, score_result
from prefsmith.evaluation.scorers import ScorerSpec
from prefsmith.models.backend import BatchingOptions, ResponseLogProbs, ScoreRequest
from prefsmith.models.cache import LogProbCache
from prefsmith.models.loading import LoadOptions
from prefsmith.rewards.annotate import AnnotateOptions, read_input
from prefsmith.rewards.density_ratio import Reduction

STRENGTH_SCORER = ScorerSpec("logprob", Reduction.MEAN)


@dataclass
class PairResult:
    """One ordered (strong, weak) pair.

    Attributes:
        strong: Strong model name.
        weak: Weak model name.
        gap: strength(strong) - strength(weak).
        sections: Section scores and ``Overall`` of the density ratio.
    """

    strong: str
    weak: str
    gap: float
    sections: dict[str, float]


@dataclass
class StudyResult:
    """All pairs of a study, the models' strengths and the gap/accuracy correlation."""

    data: str
    models: list[str]
    reduction: str
    strength_source: str
    strengths: dict[str, float]
    model_sections: dict[str, dict[str, float]]
    passes: int
    pairs: list[PairResult] = field(default_factory=list)
    spearman: float | None = None
    spearman_p: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, float | None]:
    """Spearman rank correlation and p-value (``None`` when undefined).

    >>> spearman([1, 2, 3, 4], [10, 20, 25, 40])[0]
    1.0
    """
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None
    rho, p = spearmanr(x, y)
    return float(rho), float(p)


def run_study(
    data: str | Path,
    models: Sequence[str],
    reduction: Reduction = Reduction.SUM,
    strengths: Mapping[str, float] | None = None,
    load_options: LoadOptions | None = None,
    batching: BatchingOptions | None = None,
    cache: LogProbCache | None = None,
) -> StudyResult:
    """Score every response once per model, then evaluate every ordered pair."""
    reduction = Reduction(reduction)
    if reduction is Reduction.MEAN:
        raise ValueError("the study compares models with different templates; use sum or mean-char")
    if len(set(models)) != len(models) or len(models) < 2:
        raise ValueError("a study needs at least two distinct models")
    validated = read_input(data, AnnotateOptions())
    good = validated.good
    ids = pair_ids(good)
    subsets = [str(rec.value.get("subset", "all")) for rec, _ in good]
    requests = [ScoreRequest(item.context, resp) for _, item in good for resp in item.responses]

    logprobs: dict[str, list[ResponseLogProbs]] = {}
    for name in models:  # one pass per model
        backend = cached_backend(name, load_options, batching, cache)
        logprobs[name] = backend.score(requests)
        backend.release()  # free the weights before the next model

    model_sections = {
        name: score_result(STRENGTH_SCORER, ids, subsets, logprobs[name], None, False).sections
        for name in models
    }
    if strengths is None:
        strengths = {name: model_sections[name]["Overall"] for name in models}
        source = f"own reference-free accuracy ({STRENGTH_SCORER.name})"
    else:
        missing = [m for m in models if m not in strengths]
        if missing:
            raise ValueError(f"no strength given for {', '.join(missing)}")
        source = "user-supplied"
    spec = ScorerSpec("density-ratio", reduction)
    result = StudyResult(
        str(data),
        list(models),
        reduction.value,
        source,
        dict(strengths),
        model_sections,
        passes=len(models),
    )
    for strong, weak in itertools.permutations(models, 2):
        scored = score_result(spec, ids, subsets, logprobs[strong], logprobs[weak], False)
        gap = strengths[strong] - strengths[weak]
        result.pairs.append(PairResult(strong, weak, gap, scored.sections))
    result.spearman, result.spearman_p = spearman(
        [p.gap for p in result.pairs], [p.sections["Overall"] for p in result.pairs]
    )
    return result


def write_study(result: StudyResult, out_dir: str | Path) -> list[Path]:
    """Write ``study.json``, ``study.md`` and ``study.png`` (gap vs accuracy scatter)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(result.to_json(), indent=2))
    (out / "study.md").write_text(study_markdown(result))
    return [out / "study.json", out / "study.md", plot_study(result, out / "study.png")]


def study_markdown(result: StudyResult) -> str:
    """Markdown tables of the models' strengths and every pair's accuracy."""
    sections = ["Chat", "Chat Hard", "Safety", "Reasoning", "Overall"]
    lines = [
        f"# Strong/weak pair study on `{result.data}` ({result.reduction})",
        "",
        f"{len(result.models)} models, {len(result.pairs)} ordered pairs, {result.passes} "
        f"scoring passes. Strength: {result.strength_source}.",
        "",
        "| model | strength | " + " | ".join(f"ref-free {s}" for s in sections) + " |",
        "|---|---:|" + "---:|" * len(sections),
    ]
    for name in result.models:
        cells = [f"{100 * result.model_sections[name].get(s, float('nan')):.1f}" for s in sections]
        lines.append(f"| {name} | {result.strengths[name]:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "| strong | weak | gap | " + " | ".join(sections) + " |"]
    lines.append("|---|---|---:|" + "---:|" * len(sections))
    for p in sorted(result.pairs, key=lambda p: -p.sections["Overall"]):
        cells = [f"{100 * p.sections.get(s, float('nan')):.1f}" for s in sections]
        lines.append(f"| {p.strong} | {p.weak} | {p.gap:+.3f} | " + " | ".join(cells) + " |")
    rho = "undefined" if result.spearman is None else f"{result.spearman:.3f}"
    p_value = "" if result.spearman_p is None else f" (p = {result.spearman_p:.3g})"
    lines += ["", f"Spearman correlation of gap and overall accuracy: {rho}{p_value}."]
    return "\n".join(lines) + "\n"


def plot_study(result: StudyResult, path: Path) -> Path:
    """Scatter of performance gap vs overall accuracy, one labelled point per ordered pair."""
    from prefsmith.plotting import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    xs = [p.gap for p in result.pairs]
    ys = [p.sections["Overall"] for p in result.pairs]
    ax.scatter(xs, ys)
    for p, x, y in zip(result.pairs, xs, ys, strict=True):
        ax.annotate(f"{p.strong}\n/{p.weak}", (x, y), fontsize=6, alpha=0.8)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("performance gap (strong - weak)")
    ax.set_ylabel("density-ratio accuracy (overall)")
    rho = "n/a" if result.spearman is None else f"{result.spearman:.2f}"
    ax.set_title(f"Spearman rho = {rho}", fontsize=10)
    return save_figure(fig, path)
