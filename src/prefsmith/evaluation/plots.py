"""PNG plots of evaluation and study results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefsmith.evaluation.results import EvalResult
from prefsmith.evaluation.sections import SECTION_ORDER
from prefsmith.plotting import pyplot, save_figure


def bar_values(result: EvalResult) -> tuple[list[str], list[list[float]]]:
    """The bars of :func:`plot_sections`: RewardBench sections for pairs; for K-wise rows
    the benchmark's subsets (RewardBench 2) or overall hard/normal/easy (RM-Bench), then
    ``Overall``; one list of values per scorer.

    >>> from prefsmith.evaluation.kwise import evaluate_kwise
    >>> rows = [{"subset": "Math", "rewards_chosen": [1.0], "rewards_rejected": [0.0]}]
    >>> bar_values(EvalResult("x", 1, {}, {}, {}, [evaluate_kwise(rows, ["0"], "s")]))
    (['Math', 'Overall'], [[1.0, 1.0]])
    """
    first = result.scorers[0] if result.scorers else None
    if first is None or first.benchmark is None:
        labels = [s for s in SECTION_ORDER if any(s in r.sections for r in result.scorers)]
        return labels, [[r.sections.get(s, 0.0) for s in labels] for r in result.scorers]
    names = [s for s in first.subsets if first.benchmark["kind"] != "rmbench" or "all /" in s]
    values = [
        [r.subsets.get(s, {}).get("accuracy", 0.0) for s in names] + [r.sections["Overall"]]
        for r in result.scorers
    ]
    return [*names, "Overall"], values


def plot_sections(result: EvalResult, path: Path) -> Path:
    """Grouped bars: accuracy per section (and overall) for each scorer (see
    :func:`bar_values` for K-wise rows)."""
    plt = pyplot()
    sections, values = bar_values(result)
    width = 0.8 / max(len(result.scorers), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(sections) + 2, 4))
    for k, scorer in enumerate(result.scorers):
        xs = [i + k * width for i in range(len(sections))]
        ax.bar(xs, values[k], width, label=scorer.scorer)
    ax.set_xticks([i + width * (len(result.scorers) - 1) / 2 for i in range(len(sections))])
    ax.set_xticklabels(sections)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("pairwise accuracy")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_margins(result: EvalResult, path: Path) -> Path:
    """Histogram of |margin| for correct vs incorrect pairs, one panel per scorer."""
    plt = pyplot()
    n = len(result.scorers)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.5), squeeze=False)
    for ax, scorer in zip(axes[0], result.scorers, strict=True):
        margins = list(scorer.margins.values())
        correct = [m for m in margins if m > 0]
        wrong = [-m for m in margins if m <= 0]
        ax.hist([correct, wrong], bins=20, label=["correct", "incorrect"], alpha=0.8)
        ax.set_title(scorer.scorer, fontsize=9)
        ax.set_xlabel("|reward margin|")
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_reliability(calibration: dict[str, dict[str, Any]], path: Path) -> Path:
    """Reliability diagram: held-out accuracy against confidence, one line per fit."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot([0.5, 1.0], [0.5, 1.0], color="grey", linestyle=":", linewidth=1, label="perfect")
    for name, info in calibration.items():
        bins = info.get("reliability") or []
        if not bins:
            continue
        ax.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            marker="o",
            label=f"{name} (ECE {info['ece']:.3f})",
        )
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("confidence max(p, 1 - p), held-out")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=6)
    return save_figure(fig, path)
