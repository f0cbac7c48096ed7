"""The stage layer: one config per stage, from which the commands and the recipe kinds come."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prefsmith.cli.main import app
from prefsmith.cli.stages import build_settings, options_of, settings_from
from prefsmith.recipes import RecipeError, parse_recipe
from prefsmith.stages import STAGES
from prefsmith.stages.fields import leaves

runner = CliRunner()
ALL_KINDS = [
    "score", "eval", "study", "sample", "pairs", "rmboost", "rlaif", "rlcd", "west-of-n",
    "relabel", "train", "judge",
]  # fmt: skip


def test_every_stage_is_a_command_and_a_recipe_kind():
    from prefsmith.recipes.schema import KINDS

    assert list(STAGES) == ALL_KINDS and list(KINDS) == ALL_KINDS
    for name in ALL_KINDS:
        result = runner.invoke(app, [name, "--help"], terminal_width=200)
        assert result.exit_code == 0, result.output
        assert STAGES[name].summary.split(":")[0] in " ".join(result.output.split())
        assert ("Engine" in result.output) == STAGES[name].engine


def test_every_option_comes_from_a_documented_field():
    for kind in STAGES.values():
        options = options_of(kind)
        assert len({o.flag for o in options}) == len(options), kind.name
        for option in options:
            assert option.leaf.help, f"{kind.name}: {option.leaf.dotted} has no docstring entry"
        config_fields = {o.leaf.dotted for o in options if o.target == "config"}
        offered = {leaf.dotted for leaf in leaves(kind.config)} - {kind.argument}
        hidden = offered - config_fields
        # What a command does not offer as an option is a field the stage fixes, or one that
        # is not one value of one type (a dict, text-or-list): --set and --config reach it.
        fixed = ("train.data", "train.output_dir", "sampling.n", "sampling.system_prompt")
        assert all(
            name.endswith((".extra", "lora_target_modules", *fixed))
            or name in ("scorer", "reduction")
            for name in hidden
        ), (kind.name, hidden)


def test_set_reaches_a_setting_without_an_option():
    kind = STAGES["train"]
    values = {"sets": ["lora_target_modules=[q_proj, v_proj]"], "argument": "pairs.jsonl"}
    cfg, _, _ = build_settings(kind, settings_from(kind, options_of(kind), values))
    assert cfg.train.lora_target_modules == ["q_proj", "v_proj"]


def test_config_file_then_set_then_options(tmp_path):
    kind = STAGES["sample"]
    config = tmp_path / "sample.yaml"
    config.write_text("max_new_tokens: 5\nn: 2\nseed: 7\ntemperature: 0.5\nlimit: 3\n")
    values = {"config_file": config, "sets": ["n=3", "seed=8"], "n": 1, "argument": "p.jsonl"}
    cfg, engine, run = build_settings(kind, settings_from(kind, options_of(kind), values))
    assert (cfg.sampling.n, cfg.sampling.seed, cfg.sampling.max_new_tokens) == (1, 8, 5)
    assert cfg.sampling.temperature == 0.5 and cfg.input == "p.jsonl"
    assert run.limit == 3 and run.chunk_size == 16  # the stage's own run default
    assert engine.dtype == "auto"


def test_nested_and_prefixed_names(tmp_path):
    kind = STAGES["rmboost"]
    values = {"seed": 1, "rmboost_seed": 2, "aspects": ["a,b", "c"], "check": True}
    cfg, _, _ = build_settings(kind, settings_from(kind, options_of(kind), values))
    assert (cfg.sampling.seed, cfg.rmboost.seed) == (1, 2)
    assert cfg.rmboost.aspects == ("a", "b", "c") and cfg.check
    with pytest.raises(ValueError, match=r"filter_agreement \(--filter-agreement\) needs check"):
        build_settings(kind, settings_from(kind, options_of(kind), {"filter_agreement": True}))


def test_an_optional_section_exists_only_when_one_of_its_settings_is_given():
    kind = STAGES["score"]
    plain, _, _ = build_settings(kind, settings_from(kind, options_of(kind), {}))
    routed, _, _ = build_settings(kind, settings_from(kind, options_of(kind), {"router": "rules"}))
    assert plain.customization is None
    assert routed.customization.router == "rules" and routed.customization.domains is None


def test_bad_settings_are_named(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("max_new_tokns: 5\n")
    result = runner.invoke(app, ["sample", "--config", str(config)])
    assert result.exit_code == 2
    assert "unknown setting 'max_new_tokns' for sample" in " ".join(result.output.split())
    missing = runner.invoke(app, ["pairs"])
    assert missing.exit_code == 2 and "missing INPUT" in missing.output


def test_relabel_from_a_config_file(tmp_path):
    """A whole command from --config (relabel needs no model)."""
    rows = [
        {"prompt": f"q{i}", "chosen": "a", "rejected": "b", "reward_chosen": float(i),
         "reward_rejected": float(-i)}
        for i in range(1, 5)
    ]  # fmt: skip
    src = tmp_path / "scored.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "relabel.yaml"
    config.write_text("method: minmax\ndecimals: 0\ntie_rule: both\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app, ["relabel", str(src), "-o", str(out), "--config", str(config), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == 8 and {r["goal"] for r in written} >= {1.0, 10.0}
    settings = json.loads((tmp_path / "out.jsonl.settings.json").read_text())
    assert settings["settings"]["goal_mapping"]["method"] == "minmax"


def _every_kind() -> dict:
    prompts = "prefsmith:prompts/mt-bench.jsonl"
    pairs = "prefsmith:rewardbench-tiny.jsonl"
    return {
        "stages": [
            {"name": "score", "kind": "score", "input": pairs},
            {"name": "eval", "kind": "eval", "input": pairs, "scorers": ["density-ratio:sum"]},
            {"name": "study", "kind": "study", "input": pairs, "models": ["a", "b"]},
            {"name": "sample", "kind": "sample", "input": prompts},
            {"name": "pairs", "kind": "pairs", "input": "sample"},
            {"name": "rmboost", "kind": "rmboost", "input": prompts, "check": True},
            {"name": "rlaif", "kind": "rlaif", "input": prompts},
            {"name": "rlcd", "kind": "rlcd", "input": prompts},
            {"name": "west-of-n", "kind": "west-of-n", "input": prompts},
            {"name": "relabel", "kind": "relabel", "input": "pairs"},
            {"name": "train", "kind": "train", "input": "relabel"},
            {"name": "judge", "kind": "judge", "tuned": "@train"},
        ]
    }


def test_a_recipe_takes_every_kind_with_the_recipes_models():
    recipe = parse_recipe({**_every_kind(), "models": {"policy": "p", "strong": "s", "weak": "w"}})
    assert [s.kind for s in recipe.stages] == ALL_KINDS
    stage = {s.name: s.config for s in recipe.stages}
    assert stage["sample"].model == "p" and stage["pairs"].strong == "s"
    assert stage["west-of-n"].weak == "w" and stage["judge"].baseline == "p"
    assert stage["train"].train.model == "p" and stage["train"].resume
    assert stage["judge"].judge.strong == "s"


@pytest.mark.parametrize(
    ("reader", "source", "needs"),
    [
        ("pairs", "rlaif", "'responses'"),
        ("relabel", "sample", "'chosen', 'rejected'"),
        ("eval", "sample", "'chosen', 'rejected'"),
        ("train", "rlaif", None),
        ("pairs", "sample", None),
        ("score", "sample", None),  # candidates: prompt + responses
        ("relabel", "score", None),  # a file's columns are checked by the runner, row by row
    ],
)
def test_a_stage_reading_a_column_its_input_stage_does_not_write_is_refused(reader, source, needs):
    stages = {s["name"]: s for s in _every_kind()["stages"]}
    recipe = {"stages": [stages[source], {**stages[reader], "input": source}]}
    if needs is None:
        parse_recipe(recipe)
        return
    with pytest.raises(RecipeError) as err:
        parse_recipe(recipe)
    text = str(err.value)
    assert f"stage {reader} ({reader}) reads {needs}" in text
    assert f"stage {source} ({source}) does not write" in text


def test_default_input_and_output(tmp_path, monkeypatch):
    """`prefsmith score` with no argument scores the shipped pairs into runs/ (the README's)."""
    from prefsmith.testing import tiny_model

    monkeypatch.chdir(tmp_path)
    args = ["score", "--strong", tiny_model(seed=0), "--weak", tiny_model(seed=1)]
    result = runner.invoke(app, [*args, "--limit", "2", "--no-report", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "runs" / "score-rewardbench-tiny.jsonl").read_text().splitlines()
    assert len(rows) == 2 and "reward_margin" in json.loads(rows[0])


def test_rendering_is_one_field_for_the_command_the_recipe_and_the_reward():
    from prefsmith.defaults import RENDERINGS
    from prefsmith.recipes.schema import judges_with_labeler

    for name in ("score", "eval", "pairs", "rmboost", "west-of-n"):
        (option,) = [o for o in options_of(STAGES[name]) if o.flag == "--rendering"]
        assert option.panel == "Models" and option.leaf.default == "own"
        assert "same-text" in option.leaf.help
    result = runner.invoke(app, ["score", "--help"], terminal_width=200)
    assert "--rendering" in result.output and "same-text" in result.output
    kind = STAGES["score"]
    cfg, _, _ = build_settings(
        kind, settings_from(kind, options_of(kind), {"rendering": "same-text"})
    )
    assert cfg.rendering == "same-text" and RENDERINGS == ("own", "same-text")
    with pytest.raises(ValueError, match="rendering"):
        build_settings(kind, settings_from(kind, options_of(kind), {"sets": ["rendering=same"]}))
    # Recipes: the same field; a judge is the labeler only when it renders the same way.
    labeler = {"name": "pairs", "kind": "west-of-n", "rendering": "same-text"}
    judge = {"name": "judge", "kind": "judge", "tuned": "x"}
    assert judges_with_labeler(parse_recipe({"stages": [labeler, judge]})) == {}
    same = {**judge, "judge": {"scorer": "density-ratio:sum+same-text"}}
    assert judges_with_labeler(parse_recipe({"stages": [labeler, same]})) == {"judge": "pairs"}
    with pytest.raises(RecipeError, match="rendering"):
        parse_recipe({"stages": [{**labeler, "rendering": "strong"}]})


def test_quality_presets_name_shipped_fits_of_packaged_models_on_every_scoring_command():
    from prefsmith.defaults import QUALITY_SCORERS
    from prefsmith.models.registry import PACKAGED_MODELS
    from prefsmith.rewards.fitted import load_fitted_model
    from prefsmith.rewards.spec import ScorerSpec
    from prefsmith.stages.base import ScorerFields

    for quality, spec in QUALITY_SCORERS.items():
        fields = ScorerFields(quality=quality)  # type: ignore[arg-type]
        if spec is None:
            assert fields.scorer_spec() == "density-ratio:sum"
            continue
        assert fields.scorer_spec() == spec
        model = load_fitted_model(spec.removeprefix("fitted:"))
        for part in model.scorers:  # every part runs packaged models only
            assert set(ScorerSpec.parse(part).models) <= set(PACKAGED_MODELS), part
    # One flag on each command that scores; a preset and a scorer together are refused.
    for command in ("score", "eval", "pairs", "west-of-n", "rmboost", "serve"):
        help_text = runner.invoke(app, [command, "--help"]).output
        assert "--quality" in help_text, command
    refused = runner.invoke(app, ["score", "--quality", "best", "--scorer", "logprob:sum"])
    assert refused.exit_code != 0 and "not both" in refused.output
