"""Fitted combinations of scorers, cross-validated on already-scored pairs (``eval --fit``).

Nothing is re-scored: every fit works on the per-pair margins an evaluation wrote. Methods
(each a linear model in logit units, :class:`~prefsmith.rewards.fitted.FittedModel`):

* ``length``: per scorer, ``margin - lambda * (len_chosen - len_rejected)``, lambda fitted
  (characters or the scorer's strong-model tokens);
* ``ensemble``: ``sum_j w_j * margin_j``, weights fitted on the scorers' margins (each scaled
  by its root mean square, weights L2-regularized);
* ``average``: the unweighted mean of the scorers' RMS-scaled margins (only a scale fitted);
* ``calibration``: per scorer, ``P(chosen preferred) = sigmoid(margin / T)``, T fitted by
  maximum likelihood; reported with the expected calibration error (ECE) and reliability bins.

Every model is fitted by maximum likelihood of "chosen is preferred" under
``sigmoid(w . x)`` (logistic regression without intercept: the pair order carries no
information, so the model is antisymmetric). With ``k`` folds (deterministic for a seed,
stratified by subset), each pair's held-out score comes from the model fitted on the other
``k - 1`` folds; accuracies, sections and ECE are computed on those held-out scores only. The
models written for later use (``fit.json``) are fitted on all rows.

Claims are checked against a baseline scorer on the same pairs: a paired bootstrap of the
difference in overall score (pairs resampled within each subset) and a two-sided sign test on
the pairs where exactly one of the two is right.

K-wise rows (RewardBench 2, RM-Bench; :mod:`prefsmith.evaluation.kwise`) are fitted on one
pair per prompt, its hardest: the worst-scored correct completion against the best-scored
incorrect one (the row's ``reward_margin``, and their length difference). That margin is
above 0 exactly when every correct completion beats every incorrect one, which is what
RewardBench 2's best-of-4 (up to exact ties) and its Ties accuracy ask; one pair per prompt
keeps folds, bootstrap and sign test per prompt. A fitted model is a reward per completion,
so each held-out prompt's completions are then rescored by the model of the other folds and
the ``cv:`` columns get the benchmark's own score (RewardBench 2's subsets, RM-Bench's
hard/normal/easy); the comparisons with the baseline stay on the margins (the share of
prompts where every correct completion wins).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prefsmith.evaluation.results import EvalResult
from prefsmith.evaluation.sections import section_scores, subset_results
from prefsmith.rewards.fitted import LENGTH_UNITS, FittedModel

#: The fit methods ``eval --fit`` accepts.
METHODS = ("length", "ensemble", "average", "calibration", "routed")

#: Routers a ``routed`` fit may use: they route without a scoring model, at fit and at use.
FIT_ROUTERS = ("embedding", "rules")


@dataclass(frozen=True)
class FitOptions:
    """How ``eval --fit`` fits and reports.

    Attributes:
        methods: Any of ``length`` (a scorer and a length penalty), ``ensemble`` (a weighted
            sum of the scorers), ``average`` (their standardized mean), ``calibration`` (a
            scorer's temperature), ``routed`` (per domain of the prompt, its own weights of
            the scorers and of the length; domains with too few pairs use the weights fitted
            on all of them).
        folds: Number of cross-validation folds (at least 2).
        seed: Seed of the fold assignment and of the bootstrap.
        baseline: Scorer the others are compared with (default: the first scorer).
        length_unit: ``chars`` or ``tokens`` for the length penalty.
        l2: L2 penalty on the standardized weights of ``length`` and ``ensemble`` (0: none).
        bootstrap: Bootstrap resamples for the interval of a difference.
        bins: Reliability-diagram bins over the confidence range [0.5, 1].
        route_with: The ``routed`` fit's router: ``embedding`` or ``rules`` (no scoring model
            needed, so the fit routes the same way wherever it is used).
        route_domains: The ``routed`` fit's domains file (a path, or a shipped name).
        min_domain_pairs: Fewest pairs a domain needs for weights of its own.
    """

    methods: tuple[str, ...] = ("length", "ensemble", "calibration")
    folds: int = 5
    seed: int = 0
    baseline: str | None = None
    length_unit: str = "chars"
    l2: float = 1.0
    bootstrap: int = 2000
    bins: int = 5
    route_with: str = "embedding"
    route_domains: str = "default"
    min_domain_pairs: int = 20

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown fit method(s) {unknown}; choose from {', '.join(METHODS)}")
        if self.folds < 2:
            raise ValueError("--folds must be at least 2")
        if self.length_unit not in LENGTH_UNITS:
            raise ValueError(f"length unit must be one of {', '.join(LENGTH_UNITS)}")
        if self.route_with not in FIT_ROUTERS:
            raise ValueError(
                f"a routed fit routes with {' or '.join(FIT_ROUTERS)}, not {self.route_with!r}"
                " (the lm router needs the scoring model)"
            )


@dataclass
class PairTable:
    """Scored pairs, aligned across scorers.

    Attributes:
        ids: Pair ids.
        subsets: Subset of each pair.
        margins: Per scorer, the margin (chosen minus rejected) of each pair.
        length_diff: Per scorer, ``len(chosen) - len(rejected)`` in the fit's length unit (K-wise
            rows: of the worst correct and the best incorrect completion).
        rows: Per scorer, the scored rows, aligned with ``ids``.
        domains: The domain of each pair's prompt (``routed`` fits; empty otherwise).
    """

    ids: list[str]
    subsets: list[str]
    margins: dict[str, np.ndarray]
    length_diff: dict[str, np.ndarray] = field(default_factory=dict)
    rows: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    domains: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


# ---------------------------------------------------------------------------------------------
# Folds and the logistic fit


def fold_ids(subsets: Sequence[str], k: int, seed: int = 0) -> np.ndarray:
    """Fold of each row: shuffled within each subset, then dealt round-robin (stratified).

    >>> folds = fold_ids(["a"] * 6 + ["b"] * 4, 2, seed=0)
    >>> [int((folds[:6] == f).sum()) for f in (0, 1)], [int((folds[6:] == f).sum()) for f in (0, 1)]
    ([3, 3], [2, 2])
    >>> bool((fold_ids(["a"] * 10, 3, 1) == fold_ids(["a"] * 10, 3, 1)).all())
    True
    """
    rng = np.random.default_rng(seed)
    folds = np.empty(len(subsets), dtype=int)
    position = 0
    for subset in sorted(set(subsets)):
        rows = np.array([i for i, s in enumerate(subsets) if s == subset])
        rng.shuffle(rows)
        for row in rows:
            folds[row] = position % k
            position += 1
    return folds


def rms(x: np.ndarray) -> float:
    """Root mean square (1 for an all-zero column, so scaling never divides by 0).

    >>> rms(np.array([3.0, -4.0])) == (12.5) ** 0.5, rms(np.zeros(3))
    (True, 1.0)
    """
    value = float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0
    return value if value > 0 else 1.0


def fit_logistic(x: np.ndarray, l2: float = 0.0) -> np.ndarray:
    """Weights ``w`` maximizing ``sum_i log sigmoid(x_i . w) - l2/2 |w|^2`` (no intercept).

    Each row of ``x`` is a pair's features with chosen first (the label is always "chosen
    preferred"; by antisymmetry this equals logistic regression on both orders of each pair).

    >>> x = np.array([[2.0], [1.0], [-1.0], [3.0]])
    >>> w = fit_logistic(x)
    >>> float(w[0]) > 0
    True
    """
    from scipy.optimize import minimize

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w
        value = float(np.logaddexp(0.0, -z).sum()) + 0.5 * l2 * float(w @ w)
        grad = -(x.T @ _sigmoid(-z)) + l2 * w
        return value, grad

    start = np.zeros(x.shape[1])
    result = minimize(loss, start, jac=True, method="L-BFGS-B")
    return np.asarray(result.x, dtype=float)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


# ---------------------------------------------------------------------------------------------
# The methods: features of a table, and a model fitted on some of its rows


@dataclass(frozen=True)
class Method:
    """One fit: its name, method, the scorers it combines and (``routed``) the domains, in the
    order of the domain column of its features."""

    name: str
    method: str
    scorers: tuple[str, ...]
    domains: tuple[str, ...] = ()


def plan_methods(
    scorers: Sequence[str], methods: Sequence[str], domains: Sequence[str] = ()
) -> list[Method]:
    """The fits ``methods`` ask for over ``scorers`` (ensembles need two scorers or more;
    ``routed`` needs the pairs' ``domains``).

    >>> [m.name for m in plan_methods(["a", "b"], ["length", "ensemble", "calibration"])]
    ['length:a', 'length:b', 'ensemble', 'calibration:a', 'calibration:b']
    >>> [m.name for m in plan_methods(["a"], ["ensemble", "average"])]
    []
    >>> plan_methods(["a", "b"], ["routed"], ["code", "chat", "code"])[0].domains
    ('chat', 'code')
    """
    plan = []
    for method in METHODS:
        if method not in methods:
            continue
        if method in ("ensemble", "average"):
            if len(scorers) >= 2:
                plan.append(Method(method, method, tuple(scorers)))
        elif method == "routed":
            if not domains:
                raise ValueError("a routed fit needs the domain of every pair")
            plan.append(Method(method, method, tuple(scorers), tuple(sorted(set(domains)))))
        else:
            plan += [Method(f"{method}:{s}", method, (s,)) for s in scorers]
    order = {m: i for i, m in enumerate(methods)}
    return sorted(plan, key=lambda m: order.get(m.method, len(order)))


def features(table: PairTable, method: Method) -> np.ndarray:
    """The feature matrix of ``method``: the scorers' margins (``length`` and ``routed``: the
    first scorer's length difference; ``routed``: last, the index of the pair's domain in
    ``method.domains``)."""
    columns = [table.margins[s] for s in method.scorers]
    if method.method in ("length", "routed"):
        columns.append(table.length_diff[method.scorers[0]])
    if method.method == "routed":
        columns.append(np.array([method.domains.index(d) for d in table.domains]))
    return np.column_stack(columns).astype(float)


def _weights_and_length(x: np.ndarray, l2: float) -> tuple[np.ndarray, float, np.ndarray]:
    """Logistic weights of the margin columns of ``x`` and of its last (length) column, fitted
    on standardized columns; and the columns' scales."""
    scales = np.array([rms(x[:, j]) for j in range(x.shape[1])])
    raw = fit_logistic(x / scales, l2) / scales
    return raw[:-1], float(raw[-1]), scales


def _fit_routed(
    method: Method, x: np.ndarray, options: FitOptions, length_unit: str
) -> FittedModel:
    """Weights of all rows, then of each domain with at least ``options.min_domain_pairs``."""
    values, domain = x[:, :-1], x[:, -1].astype(int)
    weights, length_weight, scales = _weights_and_length(values, options.l2)
    routes: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(method.domains):
        rows = domain == k
        if rows.sum() >= options.min_domain_pairs:
            w, lw, _ = _weights_and_length(values[rows], options.l2)
            routes[name] = {
                "weights": [float(v) for v in w],
                "length_weight": lw,
                "pairs": int(rows.sum()),
            }
    extra = {
        "router": options.route_with,
        "domains": options.route_domains,
        "min_domain_pairs": options.min_domain_pairs,
        "domain_order": list(method.domains),
    }
    return _fitted(method, weights, length_weight, length_unit, scales, extra, routes)


def _fitted(
    method: Method,
    weights: Any,
    length_weight: float,
    length_unit: str,
    scales: Any,
    extra: dict[str, Any],
    routes: dict[str, dict[str, Any]] | None = None,
) -> FittedModel:
    """The :class:`FittedModel` of ``method`` with these values (numpy ones made floats)."""
    return FittedModel(
        name=method.name,
        method=method.method,
        scorers=method.scorers,
        weights=tuple(float(w) for w in weights),
        length_weight=float(length_weight),
        length_unit=length_unit,
        scales=tuple(float(v) for v in scales),
        extra=extra,
        routes=routes or {},
    )


def fit_model(
    method: Method, x: np.ndarray, options: FitOptions, length_unit: str = "chars"
) -> FittedModel:
    """Fit ``method`` on feature rows ``x`` (see :func:`features`)."""
    if method.method == "routed":
        return _fit_routed(method, x, options, length_unit)
    scales = np.array([rms(x[:, j]) for j in range(x.shape[1])])
    z = x / scales
    extra: dict[str, Any] = {}
    length_weight = 0.0
    if method.method == "calibration":
        (w,) = fit_logistic(z, 0.0)
        weights = np.array([w / scales[0]])
        extra["temperature"] = float(1.0 / weights[0]) if weights[0] != 0 else float("inf")
    elif method.method == "average":
        combined = z.mean(axis=1, keepdims=True)
        (c,) = fit_logistic(combined, 0.0)
        weights = c / scales / z.shape[1]
        extra["scale"] = float(c)
    else:
        std = fit_logistic(z, options.l2)
        raw = std / scales
        extra["standardized_weights"] = [float(v) for v in std]
        if method.method == "length":
            weights, length_weight = raw[:1], float(raw[1])
            extra["penalty_per_unit"] = (
                float(-length_weight / weights[0]) if weights[0] != 0 else float("nan")
            )
        else:
            weights = raw
    unit = length_unit if method.method == "length" else "chars"
    return _fitted(method, weights, length_weight, unit, scales, extra)


def apply_model(model: FittedModel, x: np.ndarray) -> np.ndarray:
    """The model's margin (logit of "chosen preferred") for feature rows ``x``."""
    if model.method == "routed":
        order = model.extra["domain_order"]
        out = np.empty(len(x))
        for k, row in enumerate(x):
            weights, length_weight = model.coefficients(order[int(row[-1])])
            out[k] = float(row[:-2] @ np.array(weights)) + length_weight * row[-2]
        return out
    coefficients = list(model.weights)
    if model.method == "length":
        coefficients.append(model.length_weight)
    return x @ np.array(coefficients)


def cross_validate(
    x: np.ndarray,
    folds: np.ndarray,
    fit: Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]],
) -> np.ndarray:
    """Held-out scores: rows of fold ``f`` scored by ``fit`` on the rows of the other folds.

    ``fit(train_rows)`` returns a function scoring feature rows.

    >>> x = np.arange(6.0).reshape(6, 1)
    >>> seen = []
    >>> def fit(train):
    ...     seen.append(sorted(int(v) for v in train[:, 0]))
    ...     return lambda rows: rows[:, 0] * 0 + len(train)
    >>> cross_validate(x, np.array([0, 0, 1, 1, 2, 2]), fit).tolist()
    [4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    >>> seen[0]
    [2, 3, 4, 5]
    """
    out = np.empty(len(x))
    for fold in np.unique(folds):
        held = folds == fold
        scorer = fit(x[~held])
        out[held] = scorer(x[held])
    return out


# ---------------------------------------------------------------------------------------------
# Scores: accuracy by section, calibration, comparisons


def overall_sections(subsets: Sequence[str], margins: np.ndarray) -> dict[str, float]:
    """RewardBench sections and overall of ``margins`` (a margin > 0 is correct); without any
    RewardBench subset, ``Overall`` is the mean of the subsets' accuracies.

    >>> overall_sections(["hep-go", "llmbar-natural"], np.array([1.0, -1.0]))
    {'Chat Hard': 0.0, 'Reasoning': 1.0, 'Overall': 0.5}
    >>> overall_sections(["Math", "Math", "Focus"], np.array([1.0, -1.0, 1.0]))
    {'Overall': 0.75}
    """
    results = subset_results(zip(subsets, (float(m) for m in margins), strict=True))
    sections = section_scores(results)
    if "Overall" not in sections and results:
        sections["Overall"] = float(np.mean([r.accuracy for r in results.values()]))
    return sections


def reliability(p_chosen: np.ndarray, bins: int = 5) -> list[dict[str, float]]:
    """Reliability-diagram bins over confidence ``max(p, 1 - p)`` in [0.5, 1].

    A pair counts as correct when the side it favours is chosen (``p > 0.5``; ``p = 0.5`` is
    wrong, as a tie is). Empty bins are left out.

    >>> reliability(np.array([0.9, 0.9, 0.2, 0.55]), bins=5)  # doctest: +NORMALIZE_WHITESPACE
    [{'low': 0.5, 'high': 0.6, 'count': 1, 'confidence': 0.55, 'accuracy': 1.0},
     {'low': 0.8, 'high': 0.9, 'count': 1, 'confidence': 0.8, 'accuracy': 0.0},
     {'low': 0.9, 'high': 1.0, 'count': 2, 'confidence': 0.9, 'accuracy': 1.0}]
    """
    p = np.asarray(p_chosen, dtype=float)
    confidence = np.maximum(p, 1.0 - p)
    correct = p > 0.5
    edges = np.linspace(0.5, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        members = index == b
        if members.any():
            out.append(
                {
                    "low": round(float(edges[b]), 6),
                    "high": round(float(edges[b + 1]), 6),
                    "count": int(members.sum()),
                    "confidence": round(float(confidence[members].mean()), 6),
                    "accuracy": round(float(correct[members].mean()), 6),
                }
            )
    return out


def expected_calibration_error(p_chosen: np.ndarray, bins: int = 5) -> float:
    """ECE: count-weighted mean of |accuracy - confidence| over the reliability bins.

    >>> expected_calibration_error(np.array([0.8] * 10))  # always right at 0.8
    0.2
    >>> expected_calibration_error(np.array([0.9] * 9 + [0.1]))  # right 9 of 10 at 0.9
    0.0
    """
    table = reliability(p_chosen, bins)
    n = sum(b["count"] for b in table)
    ece = sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in table) / max(n, 1)
    return round(ece, 6)


def negative_log_likelihood(logits: np.ndarray) -> float:
    """Mean ``-log sigmoid(logit)`` of "chosen preferred" (log loss).

    >>> round(negative_log_likelihood(np.array([0.0, 0.0])), 4)
    0.6931
    """
    return float(np.mean(np.logaddexp(0.0, -np.asarray(logits, dtype=float))))


def paired_bootstrap(
    subsets: Sequence[str],
    margins_a: np.ndarray,
    margins_b: np.ndarray,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Overall(a) - overall(b) with a 95 % percentile interval (pairs resampled per subset).

    >>> s = ["hep-go"] * 50
    >>> r = paired_bootstrap(s, np.ones(50), -np.ones(50), resamples=200)
    >>> r["difference"], r["low"], r["high"]
    (1.0, 1.0, 1.0)
    """
    rng = np.random.default_rng(seed)
    subsets = list(subsets)
    groups = [np.array([i for i, x in enumerate(subsets) if x == s]) for s in sorted(set(subsets))]
    names = np.array(subsets)
    a, b = np.asarray(margins_a, dtype=float), np.asarray(margins_b, dtype=float)
    observed = overall_sections(subsets, a)["Overall"] - overall_sections(subsets, b)["Overall"]
    diffs = np.empty(resamples)
    for k in range(resamples):
        rows = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        chosen = list(names[rows])
        diffs[k] = (
            overall_sections(chosen, a[rows])["Overall"]
            - overall_sections(chosen, b[rows])["Overall"]
        )
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"difference": float(observed), "low": float(low), "high": float(high)}


def sign_test(margins_a: np.ndarray, margins_b: np.ndarray) -> dict[str, float]:
    """Pairs only ``a`` gets right (wins), only ``b`` gets right (losses), two-sided p.

    >>> sign_test(np.array([1, 1, 1, -1]), np.array([-1, -1, 1, -1]))
    {'wins': 2, 'losses': 0, 'p': 0.5}
    """
    from scipy.stats import binomtest

    right_a, right_b = np.asarray(margins_a) > 0, np.asarray(margins_b) > 0
    wins, losses = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return {"wins": wins, "losses": losses, "p": round(float(p), 6)}


# ---------------------------------------------------------------------------------------------
# Everything together


@dataclass
class FitResult:
    """Held-out results of every fit, the models fitted on all rows, comparisons.

    Attributes:
        options: The fit options.
        held_out: Per fit name, the held-out margin of each pair (aligned with ``ids``).
        sections: Per fit name, held-out sections and overall.
        calibration: Per fit name, held-out ``ece``, ``nll`` and ``reliability`` bins.
        models: Per fit name, the model fitted on all rows.
        comparisons: Per scorer or fit name, ``bootstrap`` and ``sign`` against the baseline.
        baseline: The baseline scorer.
        ids: Pair ids.
    """

    options: FitOptions
    held_out: dict[str, np.ndarray]
    sections: dict[str, dict[str, float]]
    calibration: dict[str, dict[str, Any]]
    models: dict[str, FittedModel]
    comparisons: dict[str, dict[str, Any]]
    baseline: str
    ids: list[str]

    @property
    def best(self) -> str | None:
        """The fit with the best held-out overall score."""
        scored = [(s["Overall"], name) for name, s in self.sections.items() if "Overall" in s]
        return max(scored)[1] if scored else None

    def to_json(self) -> dict[str, Any]:
        models = []
        for name, model in self.models.items():
            entry = model.to_json()
            calibration = self.calibration.get(name, {})
            entry["held_out"] = {"sections": self.sections.get(name), **calibration}
            entry["vs_baseline"] = self.comparisons.get(name)
            models.append(entry)
        return {
            "note": "models fitted on all rows; held_out figures from k-fold cross-validation",
            "folds": self.options.folds,
            "seed": self.options.seed,
            "methods": list(self.options.methods),
            "length_unit": self.options.length_unit,
            "l2": self.options.l2,
            "baseline": self.baseline,
            "best": self.best,
            "models": models,
            "comparisons": self.comparisons,
        }


def run_fits(table: PairTable, options: FitOptions) -> FitResult:
    """Cross-validate, fit on all rows, and compare every scorer and fit with the baseline."""
    scorers = list(table.margins)
    baseline = options.baseline or scorers[0]
    if baseline not in table.margins:
        raise ValueError(f"baseline {baseline!r} is not one of the scorers {scorers}")
    folds = fold_ids(table.subsets, options.folds, options.seed)
    result = FitResult(options, {}, {}, {}, {}, {}, baseline, list(table.ids))
    for method in plan_methods(scorers, options.methods, table.domains):
        x = features(table, method)

        def fit(train: np.ndarray, method: Method = method) -> Callable[[np.ndarray], np.ndarray]:
            model = fit_model(method, train, options, options.length_unit)
            return lambda rows: apply_model(model, rows)

        held = cross_validate(x, folds, fit)
        result.held_out[method.name] = held
        if method.method != "calibration":  # calibration keeps the scorer's order
            result.sections[method.name] = overall_sections(table.subsets, held)
        p = _sigmoid(held)
        result.calibration[method.name] = {
            "ece": expected_calibration_error(p, options.bins),
            "nll": round(negative_log_likelihood(held), 6),
            "reliability": reliability(p, options.bins),
        }
        result.models[method.name] = fit_model(method, x, options, options.length_unit)
    base = table.margins[baseline]
    fitted = {k: v for k, v in result.held_out.items() if k in result.sections}
    candidates = {**table.margins, **fitted}
    for name, margins in candidates.items():
        if name == baseline:
            continue
        result.comparisons[name] = {
            "bootstrap": paired_bootstrap(
                table.subsets, margins, base, options.bootstrap, options.seed
            ),
            "sign": sign_test(margins, base),
        }
    return result


def pair_table(
    scored: Mapping[str, Sequence[Mapping[str, Any]]], length_unit: str = "chars"
) -> PairTable:
    """Align each scorer's scored rows by pair id (pairs missing from any scorer are dropped)."""
    from prefsmith.evaluation.harness import row_ids

    names = list(scored)
    by_id = {name: dict(zip(row_ids(rows), rows, strict=True)) for name, rows in scored.items()}
    first = row_ids(scored[names[0]])
    ids = [i for i in first if all(i in by_id[n] for n in names)]
    rows0 = [by_id[names[0]][i] for i in ids]
    subsets = [str(r.get("subset", "all")) for r in rows0]
    margins = {n: np.array([float(by_id[n][i]["reward_margin"]) for i in ids]) for n in names}
    lengths: dict[str, np.ndarray] = {}
    for n in names:
        diff = [_hardest_pair_length(by_id[n][i], length_unit) for i in ids]
        lengths[n] = np.array(diff, dtype=float)
    rows = {n: [by_id[n][i] for i in ids] for n in names}
    return PairTable(ids, subsets, margins, lengths, rows)


def route_pairs(rows: Sequence[Mapping[str, Any]], options: FitOptions) -> list[str]:
    """The domain of each row's prompt (its last user turn) under the ``routed`` fit's router,
    as :class:`~prefsmith.rewards.fitted.FittedReward` routes it when the fit is used."""
    from prefsmith.data.rows import to_scoring_item
    from prefsmith.routing.domains import load_domains
    from prefsmith.routing.routers import last_user_text, make_router

    router = make_router(options.route_with, load_domains(options.route_domains))
    prompts = [last_user_text(to_scoring_item(row).context) for row in rows]
    return [route.domain for route in router.route(prompts)]


def completion_lengths(row: Mapping[str, Any], unit: str = "chars") -> list[float]:
    """The length of each response of a scored row (K-wise: correct ones first), in characters
    or in the scorer's strong-model tokens.

    >>> completion_lengths({"prompt": "q", "chosen": ["ab"], "rejected": ["abcd", "a"]})
    [2.0, 4.0, 1.0]
    """
    from prefsmith.data.rows import to_scoring_item

    item = to_scoring_item(row)
    if unit == "tokens":
        return [float(row["response_tokens"][name][0]) for name in item.names]
    return [float(len(text)) for text in item.responses]


def _hardest_pair_length(row: Mapping[str, Any], unit: str) -> float:
    """Length of chosen minus rejected; K-wise: of the worst correct and best incorrect."""
    lengths = completion_lengths(row, unit)
    if "rewards_chosen" not in row:
        return lengths[0] - lengths[1]
    chosen, rejected = row["rewards_chosen"], row["rewards_rejected"]
    worst = int(np.argmin(chosen))
    best = len(chosen) + int(np.argmax(rejected))
    return lengths[worst] - lengths[best]


def kwise_held_out(
    table: PairTable, method: Method, folds: np.ndarray, options: FitOptions
) -> list[dict[str, Any]]:
    """K-wise rows rescored per completion by the model fitted on the other folds.

    Each held-out completion's reward is ``sum_j weights[j] * reward_j + length_weight *
    length`` (:class:`~prefsmith.rewards.fitted.FittedModel`); the rows keep ``id``,
    ``subset``, ``domain`` and the counts, for :func:`~prefsmith.evaluation.harness.evaluate`.
    """
    x = features(table, method)
    first = table.rows[method.scorers[0]]
    lengths = [np.array(completion_lengths(r, options.length_unit)) for r in first]
    per_scorer = [
        [np.array([*r["rewards_chosen"], *r["rewards_rejected"]], dtype=float) for r in rows]
        for rows in (table.rows[s] for s in method.scorers)
    ]
    out: list[dict[str, Any]] = [{} for _ in first]
    for fold in np.unique(folds):
        model = fit_model(method, x[folds != fold], options, options.length_unit)
        for k in np.flatnonzero(folds == fold):
            domain = table.domains[k] if table.domains else None
            weights, length_weight = model.coefficients(domain)
            rewards = sum(w * r[k] for w, r in zip(weights, per_scorer, strict=True))
            rewards = rewards + length_weight * lengths[k]
            n = len(first[k]["rewards_chosen"])
            row = {f: first[k][f] for f in _KEPT if f in first[k]}
            row["id"], row["subset"] = table.ids[k], table.subsets[k]
            row["rewards_chosen"] = [float(v) for v in rewards[:n]]
            row["rewards_rejected"] = [float(v) for v in rewards[n:]]
            out[k] = row
    return out


_KEPT = ("domain", "num_correct", "total_completions")


def held_out_ece(calibration: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Held-out ECE by the scorer column it belongs to.

    ``calibration:SCORER`` belongs to the plain scorer ``SCORER``; any other fit ``NAME`` (its
    own probability) to its held-out column ``cv:NAME``.

    >>> held_out_ece({"calibration:a": {"ece": 0.1}, "ensemble": {"ece": 0.2}})
    {'a': 0.1, 'cv:ensemble': 0.2}
    """
    return {
        k.removeprefix("calibration:") if k.startswith("calibration:") else f"cv:{k}": v["ece"]
        for k, v in calibration.items()
    }


def fit_evaluation(result: EvalResult, out_dir: str | Path, options: FitOptions) -> FitResult:
    """Fit on an evaluation's scored rows (``out_dir/scores``) and add the held-out results.

    Each fit with an accuracy joins ``result.scorers`` as ``cv:NAME`` (held-out margins);
    ``result.fit`` gets the calibration, comparisons and fitted models. Writes ``fit.json``
    (the models fitted on all rows, for ``fitted:FILE``) and ``reliability.png``, then rewrites
    ``results.json``, ``report.md`` and the plots. Nothing is re-scored.
    """
    from prefsmith.data.io import read_jsonl_rows
    from prefsmith.evaluation.harness import evaluate, scorer_slug, write_outputs
    from prefsmith.evaluation.plots import plot_reliability

    out = Path(out_dir)
    names = [s.scorer for s in result.scorers if not s.scorer.startswith("cv:")]
    scored = {n: read_jsonl_rows(out / "scores" / f"{scorer_slug(n)}.jsonl") for n in names}
    table = pair_table(scored, options.length_unit)
    if "routed" in options.methods:
        table.domains = route_pairs(next(iter(table.rows.values())), options)
    fits = run_fits(table, options)
    result.scorers = [s for s in result.scorers if not s.scorer.startswith("cv:")]
    kwise = any("rewards_chosen" in r for r in next(iter(table.rows.values()), []))
    if kwise:
        folds = fold_ids(table.subsets, options.folds, options.seed)
        plans = {
            m.name: m for m in plan_methods(list(table.margins), options.methods, table.domains)
        }
    for name in fits.sections:
        if kwise:  # each completion rescored by the held-out model: the benchmark's own score
            rows = kwise_held_out(table, plans[name], folds, options)
            scorer = evaluate(rows, f"cv:{name}")
            fits.sections[name] = scorer.sections
        else:
            rows = [
                {"id": i, "subset": s, "reward_margin": float(m)}
                for i, s, m in zip(table.ids, table.subsets, fits.held_out[name], strict=True)
            ]
            scorer = evaluate(rows, f"cv:{name}")
        result.scorers.append(scorer)
    summary = fits.to_json()
    summary["calibration"] = fits.calibration
    result.fit = summary
    (out / "fit.json").write_text(json.dumps(summary, indent=2))
    plot_reliability(fits.calibration, out / "reliability.png")
    write_outputs(result, out)
    return fits
