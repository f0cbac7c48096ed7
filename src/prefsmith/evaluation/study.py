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

K-wise rows (RewardBench 2, RM-Bench; :mod:`prefsmith.evaluation.kwise`) work the same way:
every completion is scored once per model, and each pair's ``Overall`` is the benchmark's
overall score (RewardBench 2's subset mean, RM-Bench's domain mean).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefsmith.data.io import load_json_file
from prefsmith.data.rows import kwise_split
from prefsmith.data.runner import read_items
from prefsmith.data.step import RowItem
from prefsmith.evaluation.harness import evaluate, prepare_pair
from prefsmith.evaluation.results import ScorerResult
from prefsmith.models.backend import ResponseLogProbs, ScoreRequest
from prefsmith.models.pool import ModelPool
from prefsmith.plotting import pyplot, save_figure
from prefsmith.rewards.density_ratio import reduce_ratio
from prefsmith.rewards.reduction import Reduction, reduce_logprobs

#: Row fields the study keeps for the benchmark arithmetic of K-wise rows.
KEPT_FIELDS = ("domain", "num_correct", "total_completions")

#: How a model's own strength is measured by default: its reference-free accuracy.
STRENGTH_SCORER = "logprob:mean"


@dataclass
class PairResult:
    """One ordered (strong, weak) pair.

    Attributes:
        strong: Strong model name.
        weak: Weak model name.
        gap: strength(strong) - strength(weak).
        sections: The density ratio's scores (see :func:`headline`): RewardBench sections,
            or a K-wise benchmark's subsets, and ``Overall``.
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


def scored_rows(items: Sequence[RowItem], rewards: Sequence[float]) -> list[dict[str, Any]]:
    """Rows as :func:`~prefsmith.evaluation.harness.evaluate` reads them, from per-response
    rewards laid out item after item: pairs get ``reward_margin``, K-wise rows
    ``rewards_chosen``/``rewards_rejected`` (their ``subset``, ``id``, ``domain`` and counts
    kept, so that RewardBench 2 and RM-Bench rows are scored as their benchmarks do).

    >>> from prefsmith.data.runner import read_items
    >>> items, _ = read_items([{"prompt": "q", "chosen": ["a"], "rejected": ["b", "c"]},
    ...                        {"prompt": "q", "chosen": "a", "rejected": "b"}], prepare_pair)
    >>> [sorted(r) for r in scored_rows(items, [1.0, 0.0, 2.0, 0.5, 0.25])]
    [['id', 'rewards_chosen', 'rewards_rejected', 'subset'], ['id', 'reward_margin', 'subset']]
    """
    rows, offset = [], 0
    for item in items:
        values = list(rewards[offset : offset + len(item.item.responses)])
        offset += len(values)
        row = {k: item.row[k] for k in KEPT_FIELDS if k in item.row}
        row["id"] = str(item.row.get("id", item.key))
        row["subset"] = str(item.row.get("subset", "all"))
        if item.item.kind == "kwise":
            k = kwise_split(item.item.names)
            row["rewards_chosen"], row["rewards_rejected"] = values[:k], values[k:]
        else:
            row["reward_margin"] = values[0] - values[1]
        rows.append(row)
    return rows


def accuracy(name: str, items: Sequence[RowItem], rewards: Sequence[float]) -> ScorerResult:
    """Accuracy of per-response rewards laid out item after item (see :func:`scored_rows`):
    RewardBench sections for pairs, the benchmark's score for K-wise rows.

    Data without RewardBench subsets gets ``Overall`` = the plain pairwise accuracy.
    """
    rows = scored_rows(items, rewards)
    result = evaluate(rows, name)
    if "Overall" not in result.sections:  # no RewardBench subset: plain pairwise accuracy
        correct = sum(s["correct"] for s in result.subsets.values())
        result.sections["Overall"] = correct / max(len(rows), 1)
    return result


def headline(result: ScorerResult) -> dict[str, float]:
    """The scores a study reports for one scorer: RewardBench sections for pairs, RewardBench
    2's subsets or RM-Bench's hard/normal/easy for K-wise rows; ``Overall`` last.

    >>> from prefsmith.evaluation.results import ScorerResult
    >>> rb2 = ScorerResult("s", {"Math": {"accuracy": 0.5}, "Ties": {"accuracy": 0.25}},
    ...                    {"Overall": 0.375}, {}, {"kind": "rewardbench2"})
    >>> headline(rb2)
    {'Math': 0.5, 'Ties': 0.25, 'Overall': 0.375}
    """
    kind = (result.benchmark or {}).get("kind")
    if kind == "rewardbench2":
        scores = {name: s["accuracy"] for name, s in result.subsets.items()}
    elif kind == "rmbench":
        scores = {n: s["accuracy"] for n, s in result.subsets.items() if n.startswith("all / ")}
    else:
        scores = {k: v for k, v in result.sections.items() if k != "Overall"}
    return {**scores, "Overall": result.sections["Overall"]}


def study_columns(result: StudyResult) -> list[str]:
    """The score columns of a study's tables, in the order the scores were reported."""
    first = result.pairs[0].sections if result.pairs else {}
    return list(first) or ["Overall"]


def load_strengths(path: str | Path) -> dict[str, float]:
    """A ``--strength`` file: JSON ``{model: benchmark score}``; errors name the file.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "strength.json"
    >>> _ = path.write_text('{"a": 61.5, "b": 40}')
    >>> load_strengths(path)
    {'a': 61.5, 'b': 40.0}
    """
    data = load_json_file(path)
    numbers = isinstance(data, dict) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in data.values()
    )
    if not numbers:
        raise ValueError(f"{path}: expected a JSON object of model name: number")
    return {str(k): float(v) for k, v in data.items()}


def run_study(
    data: str | Path,
    models: Sequence[str],
    reduction: Reduction | str = Reduction.SUM,
    strengths: Mapping[str, float] | None = None,
    pool: ModelPool | None = None,
) -> StudyResult:
    """Score every response once per model, then evaluate every ordered pair.

    >>> import json, tempfile, pathlib
    >>> from prefsmith.testing import tiny_model
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pairs.jsonl"
    >>> _ = path.write_text(json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\\n")
    >>> result = run_study(path, [tiny_model(seed=0), tiny_model(seed=1)])
    >>> len(result.pairs), result.passes
    (2, 2)
    """
    reduction = Reduction(reduction)
    if reduction is Reduction.MEAN:
        raise ValueError("the study compares models with different templates; use sum or mean-char")
    if len(set(models)) != len(models) or len(models) < 2:
        raise ValueError("a study needs at least two distinct models")
    pool = pool or ModelPool()
    items, bad = read_items(data, prepare_pair)
    if bad:
        raise bad[0]
    requests = [ScoreRequest(i.item.context, resp) for i in items for resp in i.item.responses]

    logprobs: dict[str, list[ResponseLogProbs]] = {}
    for name in models:  # one pass per model
        logprobs[name] = pool.backend(name).score(requests)
        pool.release(name)  # free the weights before the next model

    def own(lp: ResponseLogProbs) -> float:
        return reduce_logprobs(lp.total, len(lp.token_ids), lp.n_chars, Reduction.MEAN)

    model_sections = {
        name: headline(accuracy(STRENGTH_SCORER, items, [own(lp) for lp in logprobs[name]]))
        for name in models
    }
    if strengths is None:
        strengths = {name: model_sections[name]["Overall"] for name in models}
        source = f"own reference-free accuracy ({STRENGTH_SCORER})"
    else:
        missing = [m for m in models if m not in strengths]
        if missing:
            raise ValueError(f"no strength given for {', '.join(missing)}")
        source = "user-supplied"
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
        rewards = [
            reduce_ratio(s, w, reduction, False)
            for s, w in zip(logprobs[strong], logprobs[weak], strict=True)
        ]
        scored = accuracy(f"{strong},{weak}", items, rewards)
        gap = strengths[strong] - strengths[weak]
        result.pairs.append(PairResult(strong, weak, gap, headline(scored)))
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
    sections = study_columns(result)
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
    """Scatter of performance gap vs overall accuracy (%), one point per ordered pair.

    The colour is the strong model and the marker the weak one (two legends), so that
    points stay readable however many pairs crowd together.
    """
    from matplotlib.patches import Patch

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colours = plt.get_cmap("tab10").colors
    markers = "osD^vP*Xh<>p"
    colour = {m: colours[i % len(colours)] for i, m in enumerate(result.models)}
    marker = {m: markers[i % len(markers)] for i, m in enumerate(result.models)}
    for p in result.pairs:
        ax.scatter(
            p.gap,
            100 * p.sections["Overall"],
            color=colour[p.strong],
            marker=marker[p.weak],
            s=55,
            edgecolors="black",
            linewidths=0.5,
        )
    ax.axhline(50, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("performance gap (strength of strong - strength of weak)")
    ax.set_ylabel("density-ratio accuracy, overall (%)")
    rho = "n/a" if result.spearman is None else f"{result.spearman:.2f}"
    ax.set_title(f"{len(result.pairs)} ordered pairs; Spearman rho = {rho}", fontsize=10)
    strong = [Patch(color=colour[m], label=m) for m in result.models]
    weak = [
        ax.scatter([], [], color="white", edgecolors="black", marker=marker[m], label=m)
        for m in result.models
    ]
    first = ax.legend(
        handles=strong, title="strong (colour)", fontsize=7, title_fontsize=8,
        loc="upper left", bbox_to_anchor=(1.02, 1.0),
    )  # fmt: skip
    ax.add_artist(first)
    ax.legend(
        handles=weak, title="weak (marker)", fontsize=7, title_fontsize=8,
        loc="lower left", bbox_to_anchor=(1.02, 0.0),
    )  # fmt: skip
    return save_figure(fig, path)
