"""Loss curve of a training run as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def loss_points(log_history: Sequence[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """Steps and losses of the training log entries (evaluation entries are skipped).

    >>> loss_points([{"step": 1, "loss": 0.7}, {"step": 2, "eval_loss": 1.0},
    ...              {"step": 3, "loss": 0.5}])
    ([1, 3], [0.7, 0.5])
    """
    steps, losses = [], []
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            steps.append(int(entry["step"]))
            losses.append(float(entry["loss"]))
    return steps, losses


def plot_loss(log_history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> bool:
    """Draw the loss (and a moving average) to ``path``; False when there is nothing to draw."""
    steps, losses = loss_points(log_history)
    if not steps:
        return False
    from prefsmith.plotting import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, losses, lw=1, alpha=0.5, label="loss")
    window = max(1, len(losses) // 20)
    if window > 1:
        smooth = [
            sum(losses[max(0, i - window + 1) : i + 1])
            / len(losses[max(0, i - window + 1) : i + 1])
            for i in range(len(losses))
        ]
        ax.plot(steps, smooth, lw=2, label=f"moving mean ({window})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(title or "prefsmith train")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    return True
