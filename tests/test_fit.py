"""Fitted combinations (``eval --fit``): cross-validation, calibration, comparisons, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY_SET
from prefsmith.cli.main import app
from prefsmith.evaluation.fit import (
    FitOptions,
    Method,
    PairTable,
    cross_validate,
    expected_calibration_error,
    features,
    fit_model,
    fold_ids,
    overall_sections,
    paired_bootstrap,
    run_fits,
    sign_test,
)
from prefsmith.rewards.fitted import FittedModel, load_fitted_model

runner = CliRunner()


def synthetic_table(n: int, margins: dict[str, np.ndarray], length=None) -> PairTable:
    ids = [str(i) for i in range(n)]
    subsets = ["hep-go" if i % 2 else "llmbar-natural" for i in range(n)]
    diff = {name: (length if length is not None else np.zeros(n)) for name in margins}
    return PairTable(ids, subsets, margins, diff)


def test_cross_validation_never_sees_the_held_out_rows():
    # 40 pairs, 40 random features: a linear model separates any 40 points in-sample,
    # but the features carry no signal, so held-out accuracy is near chance.
    rng = np.random.default_rng(0)
    n = 40
    x = rng.normal(size=(n, n))
    method = Method("ensemble", "ensemble", tuple(f"s{j}" for j in range(n)))
    options = FitOptions(("ensemble",), folds=5, l2=1e-6)
    in_sample = fit_model(method, x, options)
    assert (x @ np.array(in_sample.weights) > 0).mean() == 1.0
    folds = fold_ids(["all"] * n, 5, seed=0)
    trained_on: list[set[int]] = []

    def fit(train):
        rows_of_x = {tuple(row): k for k, row in enumerate(x)}
        trained_on.append({rows_of_x[tuple(row)] for row in train})
        model = fit_model(method, train, options)
        return lambda rows: rows @ np.array(model.weights)

    held = cross_validate(x, folds, fit)
    for fold, seen in zip(np.unique(folds), trained_on, strict=True):
        assert seen.isdisjoint(set(np.flatnonzero(folds == fold).tolist()))
        assert len(seen) == n - (folds == fold).sum()
    assert (held > 0).mean() < 0.75


def test_held_out_length_fit_recovers_a_real_length_effect():
    # The scorer's margin is noise plus a strong length bias; the truth prefers shorter.
    rng = np.random.default_rng(1)
    n = 400
    length = rng.normal(0, 100, n)
    signal = rng.normal(1.0, 1.0, n)
    margin = signal + 0.05 * length
    table = synthetic_table(n, {"a": margin}, length)
    fits = run_fits(table, FitOptions(("length",), folds=5, bootstrap=200))
    raw = overall_sections(table.subsets, margin)["Overall"]
    held = fits.sections["length:a"]["Overall"]
    assert held > raw + 0.1
    model = fits.models["length:a"]
    assert model.extra["penalty_per_unit"] == pytest.approx(0.05, rel=0.3)
    comparison = fits.comparisons["length:a"]
    assert comparison["bootstrap"]["low"] > 0 and comparison["sign"]["p"] < 0.01


def test_calibration_recovers_a_known_temperature():
    rng = np.random.default_rng(2)
    n, true_t = 20000, 2.5
    margin = rng.normal(0.5, 3.0, n)
    # Present each pair with chosen first: flip the margin when the truth prefers the other.
    prefers_first = rng.random(n) < 1.0 / (1.0 + np.exp(-margin / true_t))
    observed = np.where(prefers_first, margin, -margin)
    x = observed[:, None]
    model = fit_model(Method("calibration:a", "calibration", ("a",)), x, FitOptions())
    assert model.extra["temperature"] == pytest.approx(true_t, rel=0.05)
    p = 1.0 / (1.0 + np.exp(-observed * model.weights[0]))
    assert expected_calibration_error(p, bins=5) < 0.02
    overconfident = 1.0 / (1.0 + np.exp(-observed * 5.0))
    assert expected_calibration_error(overconfident, bins=5) > 0.1


def test_ece_of_known_cases():
    assert expected_calibration_error(np.full(10, 0.7)) == pytest.approx(0.3)
    assert expected_calibration_error(np.array([0.75] * 3 + [0.25])) == pytest.approx(0.0)
    # Half right at confidence 0.95, all right at 0.55: |0.5-0.95|/2 + |1-0.55|/2 = 0.45.
    p = np.array([0.95, 0.05, 0.55, 0.55])
    assert expected_calibration_error(p) == pytest.approx(0.45)


def test_bootstrap_and_sign_test_of_identical_scorers_are_null():
    m = np.array([1.0, -1.0, 2.0, 0.5, -0.2, 3.0])
    subsets = ["hep-go", "llmbar-natural"] * 3
    b = paired_bootstrap(subsets, m, m, resamples=100)
    assert b == {"difference": 0.0, "low": 0.0, "high": 0.0}
    assert sign_test(m, m) == {"wins": 0, "losses": 0, "p": 1.0}


def test_ensemble_weights_a_useful_scorer_over_noise():
    rng = np.random.default_rng(3)
    n = 300
    good = rng.normal(1.0, 1.0, n)
    noise = rng.normal(0.0, 50.0, n)
    table = synthetic_table(n, {"good": good, "noise": noise})
    fits = run_fits(table, FitOptions(("ensemble", "average"), folds=4, bootstrap=100))
    std = fits.models["ensemble"].extra["standardized_weights"]
    assert std[0] > 5 * abs(std[1])
    assert fits.sections["ensemble"]["Overall"] > fits.sections["average"]["Overall"]
    assert fits.best == "ensemble"


def test_fold_assignment_is_stratified_and_deterministic():
    subsets = ["a"] * 7 + ["b"] * 5
    one, two = fold_ids(subsets, 3, seed=5), fold_ids(subsets, 3, seed=5)
    assert (one == two).all()
    assert sorted(np.bincount(one).tolist()) == [4, 4, 4]
    assert not (fold_ids(subsets, 3, seed=6) == one).all()


def test_features_of_a_length_fit():
    table = synthetic_table(3, {"a": np.array([1.0, 2.0, 3.0])}, np.array([10.0, -5.0, 0.0]))
    x = features(table, Method("length:a", "length", ("a",)))
    assert x.tolist() == [[1.0, 10.0], [2.0, -5.0], [3.0, 0.0]]


def test_eval_fit_end_to_end_and_score_with_the_fitted_file(tmp_path, tiny_models):
    out = tmp_path / "eval"
    strong, weak = tiny_models["chatml-a"], tiny_models["chatml-b"]
    cache = str(tmp_path / "c.sqlite")
    args = ["eval", str(TINY_SET), "-o", str(out), "--strong", strong, "--weak", weak]
    args += ["--scorer", "density-ratio:sum", "--scorer", f"contrast:{strong}:mean"]
    args += ["--fit", "length,ensemble,calibration", "--folds", "3", "--cache-path", cache]
    args += ["--no-report"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    names = [s["scorer"] for s in results["scorers"]]
    base = f"density-ratio:{strong},{weak}:sum"
    assert names[:2] == [base, f"contrast:{strong}:mean"]
    assert "cv:ensemble" in names and f"cv:length:{base}" in names
    fit = json.loads((out / "fit.json").read_text())
    assert fit["baseline"] == base and fit["folds"] == 3
    assert {m["name"] for m in fit["models"]} >= {"ensemble", f"calibration:{base}"}
    assert 0.0 <= fit["calibration"][f"calibration:{base}"]["ece"] <= 1.0
    assert (out / "reliability.png").stat().st_size > 0
    assert "held-out ECE" in (out / "report.md").read_text()
    assert "wins/losses" in result.output

    # The fitted models apply to new data through the spec and `score --scorer fitted:FILE`.
    scored = tmp_path / "scored.jsonl"
    args = [
        "score",
        str(TINY_SET),
        "-o",
        str(scored),
        "--scorer",
        f"fitted:{out / 'fit.json'}#ensemble",
    ]
    args += ["--strong", strong, "--weak", weak, "--cache-path", cache, "--no-report"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in scored.read_text().splitlines()]
    model = load_fitted_model(out / "fit.json", "ensemble")
    rows_eval = {
        s["scorer"]: s["margins"] for s in results["scorers"] if s["scorer"] in model.scorers
    }
    for row in rows:
        expected = sum(
            w * rows_eval[name][str(row["id"])]
            for w, name in zip(model.weights, model.scorers, strict=True)
        )
        assert row["reward_margin"] == pytest.approx(expected, abs=1e-3)
        assert row["p_chosen"] == pytest.approx(1 / (1 + np.exp(-row["reward_margin"])))


def test_routed_fit_learns_which_scorer_to_trust_in_each_domain():
    # Scorer a is right on code prompts and inverted on chat ones, b the other way round: no
    # single weighting of a and b beats chance, per-domain weights get nearly every pair.
    rng = np.random.default_rng(7)
    n = 240
    domains = ["code" if i % 2 else "chat" for i in range(n)]
    signal = rng.normal(1.0, 0.5, n)
    flip = np.array([1.0 if d == "code" else -1.0 for d in domains])
    table = synthetic_table(n, {"a": signal * flip, "b": -signal * flip})
    table.domains = domains
    options = FitOptions(("ensemble", "routed"), folds=4, bootstrap=100, min_domain_pairs=30)
    fits = run_fits(table, options)
    assert fits.sections["routed"]["Overall"] > 0.95 > 0.65 > fits.sections["ensemble"]["Overall"]
    model = fits.models["routed"]
    assert set(model.routes) == {"chat", "code"} and model.extra["domain_order"] == ["chat", "code"]
    assert model.coefficients("code")[0][0] > 0 > model.coefficients("chat")[0][0]
    # A domain with too few pairs has no weights of its own: it uses those of all pairs.
    few = run_fits(table, FitOptions(("routed",), folds=4, bootstrap=10, min_domain_pairs=1000))
    assert few.models["routed"].routes == {}
    assert FittedModel.from_json(json.loads(json.dumps(model.to_json()))) == model


def test_routed_fit_needs_domains_and_a_router_without_a_model():
    table = synthetic_table(20, {"a": np.ones(20)})
    with pytest.raises(ValueError, match="needs the domain of every pair"):
        run_fits(table, FitOptions(("routed",), folds=2))
    with pytest.raises(ValueError, match="the lm router needs the scoring model"):
        FitOptions(("routed",), route_with="lm")


def test_eval_fit_routed_end_to_end_and_score_with_it(tmp_path, tiny_models):
    # Prompts the rules router sends to code and to chat; a routed fit over two scorers.
    rows = []
    for i in range(24):
        code = i % 2 == 0
        prompt = f"Write a python function number {i}" if code else f"Tell me a story number {i}"
        rows.append({"id": str(i), "subset": "hep-python" if code else "alpacaeval-easy",
                     "prompt": prompt, "chosen": f"Sure {i}, here it is." + " ok" * (i % 3),
                     "rejected": f"No {i}."})  # fmt: skip
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    strong, weak = tiny_models["chatml-a"], tiny_models["chatml-b"]
    out, cache = tmp_path / "eval", str(tmp_path / "c.sqlite")
    args = ["eval", str(data), "-o", str(out), "--strong", strong, "--weak", weak]
    args += ["--scorer", "density-ratio:sum", "--scorer", f"logprob:{strong}:mean"]
    args += ["--fit", "routed", "--folds", "3", "--route-with", "rules", "--min-domain-pairs", "6"]
    args += ["--cache-path", cache, "--no-report"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    names = [s["scorer"] for s in json.loads((out / "results.json").read_text())["scorers"]]
    assert "cv:routed" in names
    model = load_fitted_model(out / "fit.json", "routed")
    assert set(model.routes) == {"chat", "code"} and model.extra["router"] == "rules"
    assert all(route["pairs"] == 12 for route in model.routes.values())
    # Used as a scorer, each row is routed again and scored with its domain's weights.
    scored = tmp_path / "scored.jsonl"
    args = ["score", str(data), "-o", str(scored), "--scorer", f"fitted:{out / 'fit.json'}#routed"]
    args += ["--strong", strong, "--weak", weak, "--cache-path", cache, "--no-report"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    margins = {
        s["scorer"]: s["margins"]
        for s in json.loads((out / "results.json").read_text())["scorers"]
        if s["scorer"] in model.scorers
    }
    for row in (json.loads(line) for line in scored.read_text().splitlines()):
        domain = "code" if "python" in row["prompt"] else "chat"
        assert row["fit_domain"] == domain
        weights, length_weight = model.coefficients(domain)
        length = len(row["chosen"]) - len(row["rejected"])
        expected = length_weight * length + sum(
            w * margins[name][row["id"]] for w, name in zip(weights, model.scorers, strict=True)
        )
        assert row["reward_margin"] == pytest.approx(expected, abs=1e-3)


def test_fitted_model_json_round_trip_and_best(tmp_path):
    model = FittedModel("ensemble", "ensemble", ("a", "b"), (0.5, 0.25), scales=(1.0, 2.0))
    path = tmp_path / "fit.json"
    path.write_text(json.dumps({"best": "ensemble", "models": [model.to_json()]}))
    assert load_fitted_model(path) == model
    with pytest.raises(ValueError, match="no fitted model 'other'"):
        load_fitted_model(path, "other")


def calibrated_spec(tmp_path, model_path: str) -> str:
    """A ``fitted:`` spec: a calibration of one tiny model's log-prob (T = 20)."""
    from prefsmith.rewards.density_ratio import LogProbReward

    part = LogProbReward(model_path, "sum")
    calibration = FittedModel(
        f"calibration:{part.name}", "calibration", (part.name,), (0.05,), extra={"T": 20.0}
    )
    fit_file = tmp_path / "fit.json"
    fit_file.write_text(json.dumps({"models": [calibration.to_json()]}))
    return f"fitted:{fit_file}"


def test_pairs_keep_only_pairs_above_a_probability(tmp_path, tiny_models):
    from prefsmith.data.io import read_jsonl_rows

    model_path = tiny_models["chatml-a"]
    spec = calibrated_spec(tmp_path, model_path)
    candidates = tmp_path / "candidates.jsonl"
    rows = [
        {"prompt": "Say hi.", "responses": ["Hi!", "Hello there, friend.", "No."]},
        {"prompt": "Count to three.", "responses": ["1 2 3", "one, two, three", "3"]},
        {"prompt": "Name a colour.", "responses": ["Blue", "Blue."]},
    ]
    candidates.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(threshold: float, name: str):
        out = tmp_path / name
        args = ["pairs", str(candidates), "-o", str(out), "--scorer", spec, "--no-progress"]
        result = runner.invoke(app, [*args, "--min-probability", str(threshold)])
        assert result.exit_code == 0, result.output
        return read_jsonl_rows(out)

    kept_all = run(0.5000001, "all.jsonl")
    assert kept_all and all(r["p_chosen"] > 0.5 for r in kept_all)
    cut = sorted(r["p_chosen"] for r in kept_all)[0]
    stricter = run(min(cut + 1e-9, 0.999999), "strict.jsonl")
    assert len(stricter) == len(kept_all) - 1
    assert all(r["p_chosen"] > cut for r in stricter)
    # A plain density ratio has no probability: the threshold is refused.
    args = ["pairs", str(candidates), "-o", str(tmp_path / "x.jsonl"), "--min-probability", "0.7"]
    result = runner.invoke(app, [*args, "--strong", model_path, "--weak", tiny_models["chatml-b"]])
    assert result.exit_code != 0 and "calibrated" in result.output


def test_rmboost_keeps_only_pairs_the_calibrated_check_is_sure_of(tmp_path, tiny_models):
    from prefsmith.data.io import read_jsonl_rows

    spec = calibrated_spec(tmp_path, tiny_models["chatml-a"])
    prompts = tmp_path / "prompts.jsonl"
    questions = ["Say hi.", "Count to three.", "Name a colour.", "Name a fruit.", "Add 2 and 2."]
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions))

    def run(name: str, *extra: str):
        out = tmp_path / name
        args = ["rmboost", str(prompts), "-o", str(out), "-m", tiny_models["chatml-a"]]
        args += ["--scorer", spec, "--max-new-tokens", "6", "--no-progress", *extra]
        result = runner.invoke(app, [*args])
        assert result.exit_code == 0, result.output
        return read_jsonl_rows(out), result.output

    checked, output = run("all.jsonl")
    assert len(checked) == len(questions) and "scorer agrees" in output
    for row in checked:
        assert row["p_chosen"] == pytest.approx(1 / (1 + np.exp(-row["reward_margin"])))
    # The threshold keeps exactly the pairs above it, and says why the others went.
    threshold = float(np.median([r["p_chosen"] for r in checked]))
    kept, output = run("sure.jsonl", "--min-probability", str(threshold))
    expected = sorted(r["prompt"][0]["content"] for r in checked if r["p_chosen"] > threshold)
    assert sorted(r["prompt"][0]["content"] for r in kept) == expected
    assert 0 < len(kept) < len(checked)
    assert f"p_chosen not above {threshold}" in " ".join(output.split())
    # Without a calibrated check there is no probability to threshold.
    args = ["rmboost", str(prompts), "--min-probability", "0.7", "--check"]
    result = runner.invoke(app, [*args, "-m", tiny_models["chatml-a"]])
    assert result.exit_code != 0 and "calibrated" in result.output
    plain = f"density-ratio:{tiny_models['chatml-a']},{tiny_models['chatml-b']}:sum"
    result = runner.invoke(app, [*args, "-m", tiny_models["chatml-a"], "--scorer", plain])
    assert result.exit_code != 0 and "calibrated" in result.output


def test_relabel_keeps_only_pairs_above_a_probability(tmp_path):
    from prefsmith.data.io import read_jsonl_rows

    scored = tmp_path / "scored.jsonl"
    rows = [
        {"id": k, "prompt": f"Q{k}?", "chosen": f"good {k}", "rejected": f"bad {k}"}
        | {"reward_chosen": float(k), "reward_rejected": -1.0, "p_chosen": p}
        for k, p in enumerate([0.95, 0.6, 0.81, 0.7])
    ]
    scored.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "relabeled.jsonl"
    args = ["relabel", str(scored), "-o", str(out), "--min-probability", "0.7", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted({r["id"] for r in read_jsonl_rows(out)}) == [0, 2]
    missing = tmp_path / "plain.jsonl"
    missing.write_text(json.dumps({k: v for k, v in rows[0].items() if k != "p_chosen"}) + "\n")
    args = ["relabel", str(missing), "-o", str(tmp_path / "x.jsonl"), "--min-probability", "0.7"]
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "p_chosen" in result.output


def test_shipped_fits_load_by_name_and_name_valid_scorers():
    from prefsmith.rewards.spec import ScorerSpec, parse_scorer

    # Without #NAME: the file's best held-out model, the length-controlled Qwen/Gemma pair.
    # (Building its reward would fetch the packaged weights, so only the specs are checked.)
    best = load_fitted_model("rewardbench-dev-qwen15-length")
    assert best.scorers == ("density-ratio:qwen2.5-coder-1.5b-instruct,gemma3-270m:sum",)
    assert best.method == "length" and best.length_weight != 0.0
    ensemble = load_fitted_model("rewardbench-dev-qwen15-ensemble", "ensemble")
    assert len(ensemble.scorers) == 3 and len(ensemble.weights) == 3
    for name in best.scorers + ensemble.scorers:
        assert ScorerSpec.parse(name).name == name
    with pytest.raises(FileNotFoundError, match="shipped: rewardbench-dev-qwen15-ensemble"):
        parse_scorer("fitted:rewardbench-dev-qwen15")
