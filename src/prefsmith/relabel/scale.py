"""Map rewards (density ratios, judge scores, ...) onto the goal scale of reward-conditioned data.

Density-ratio rewards are unbounded log-ratios; the goal in the system message is a score on a
fixed scale (1–10 by default, as in Zhang et al. 2024). The mapping is fitted once per dataset
on the pooled rewards of all responses (chosen and rejected) and recorded with the output:

* ``quantile`` (default): goal = low + (high − low) · F(r), with F the dataset's empirical CDF,
  stored as ``n_knots`` quantiles of the rewards and interpolated linearly between them. Robust
  to outliers; every goal level is used about equally often.
* ``minmax``: goal = low + (high − low) · (r − min) / (max − min), clipped to the scale. Keeps
  the rewards' spacing; one outlier squeezes everyone else together.
* ``identity``: rewards already are goal-scale scores (e.g. a judge's 1–10 ratings); they are
  only rounded, and must lie within the scale.

Goals are rounded to ``decimals`` places (default 1) and printed as integers when whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

ScaleMethod = Literal["quantile", "minmax", "identity"]
SCALE_METHODS: tuple[str, ...] = ("quantile", "minmax", "identity")


@dataclass(frozen=True)
class GoalScale:
    """The goal scale and how rewards are mapped onto it.

    Attributes:
        method: ``quantile``, ``minmax`` or ``identity`` (see the module docstring).
        low: Lowest goal score.
        high: Highest goal score (the one to condition on at inference).
        decimals: Places goals are rounded to; 0 gives integer goals.
        n_knots: Number of quantiles stored for ``quantile`` (more = closer to the exact ECDF).
    """

    method: ScaleMethod = "quantile"
    low: float = 1.0
    high: float = 10.0
    decimals: int = 1
    n_knots: int = 101

    def __post_init__(self) -> None:
        if self.method not in SCALE_METHODS:
            raise ValueError(f"scale method must be one of {', '.join(SCALE_METHODS)}")
        if not self.high > self.low:
            raise ValueError(f"goal scale needs high > low, got {self.low}..{self.high}")
        if self.decimals < 0 or self.n_knots < 2:
            raise ValueError("decimals must be >= 0 and n_knots >= 2")


@dataclass(frozen=True)
class FittedScale:
    """A :class:`GoalScale` with the parameters fitted on one dataset.

    Attributes:
        scale: The scale and method.
        params: Fitted parameters: ``{"min", "max"}`` for minmax, ``{"knots"}`` (reward
            quantiles at evenly spaced probabilities 0..1) for quantile, ``{}`` for identity.
        n_rewards: Number of rewards the parameters were fitted on.
    """

    scale: GoalScale
    params: dict[str, Any] = field(default_factory=dict)
    n_rewards: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of the mapping (written next to the relabeled data)."""
        return {**asdict(self.scale), "params": self.params, "n_rewards": self.n_rewards}

    def map(self, reward: float) -> float:
        """The goal for one reward, rounded to ``scale.decimals``.

        >>> fit = fit_scale([0.0, 10.0, 20.0], GoalScale("minmax", 1, 10))
        >>> fit.map(0.0), fit.map(10.0), fit.map(20.0), fit.map(99.0)
        (1.0, 5.5, 10.0, 10.0)
        """
        s = self.scale
        if self.scale.method == "identity":
            if not s.low <= reward <= s.high:
                raise ValueError(
                    f"reward {reward} is outside the goal scale {s.low}..{s.high}"
                    " (use --scale quantile or minmax for unbounded rewards)"
                )
            fraction = (reward - s.low) / (s.high - s.low)
        elif self.scale.method == "minmax":
            lo, hi = self.params["min"], self.params["max"]
            fraction = (reward - lo) / (hi - lo)
        else:
            knots = np.asarray(self.params["knots"], dtype=float)
            probs = np.linspace(0.0, 1.0, len(knots))
            fraction = float(np.interp(reward, knots, probs))
        fraction = min(max(fraction, 0.0), 1.0)
        return round(s.low + (s.high - s.low) * fraction, s.decimals) + 0.0


def fit_scale(rewards: Sequence[float], scale: GoalScale | None = None) -> FittedScale:
    """Fit ``scale`` on a dataset's rewards (all responses pooled).

    >>> fit = fit_scale([3.0, -1.0, 7.0, 1.0, 5.0], GoalScale("quantile", 1, 10, n_knots=5))
    >>> fit.params["knots"]
    [-1.0, 1.0, 3.0, 5.0, 7.0]
    >>> [fit.map(r) for r in (-1.0, 3.0, 4.0, 7.0)]
    [1.0, 5.5, 6.6, 10.0]
    >>> fit_scale([2.0, 2.0], GoalScale("minmax"))
    Traceback (most recent call last):
    ...
    ValueError: all 2 rewards are equal (2.0); no scale can separate them
    """
    scale = scale or GoalScale()
    values = np.asarray(list(rewards), dtype=float)
    if values.size == 0:
        raise ValueError("no rewards to fit the goal scale on")
    if not np.all(np.isfinite(values)):
        raise ValueError("rewards must be finite numbers")
    if scale.method == "identity":
        return FittedScale(scale, {}, int(values.size))
    if values.min() == values.max():
        raise ValueError(
            f"all {values.size} rewards are equal ({values[0]}); no scale can separate them"
        )
    if scale.method == "minmax":
        params = {"min": float(values.min()), "max": float(values.max())}
    else:
        knots = np.quantile(values, np.linspace(0.0, 1.0, scale.n_knots))
        params = {"knots": [float(k) for k in knots]}
    return FittedScale(scale, params, int(values.size))


def format_goal(goal: float) -> str:
    """Print a goal as an integer when it is whole.

    >>> format_goal(10.0), format_goal(7.5), format_goal(3.25)
    ('10', '7.5', '3.25')
    """
    if math.isfinite(goal) and float(goal).is_integer():
        return str(int(goal))
    return repr(float(goal))
