"""Presets (issue 22): ``--preset paper`` puts the published hyperparameters one option away,
for ``train`` and the recipes; every value reaches the TRL config; the CPU defaults stay."""

from __future__ import annotations

import enum

import pytest
from typer.testing import CliRunner

from prefsmith.cli.main import app
from prefsmith.recipes import load_recipe
from prefsmith.stages import STAGES, CustomizationSpec
from prefsmith.stages.presets import load_preset, stage_preset
from prefsmith.training.config import TrainConfig

#: TrainConfig field -> the TRL config attribute it becomes (training/trainer.py trl_args).
TRL_NAMES = {
    "beta": "beta",
    "simpo_gamma": "simpo_gamma",
    "learning_rate": "learning_rate",
    "lr_scheduler": "lr_scheduler_type",
    "warmup_ratio": "warmup_steps",
    "num_epochs": "num_train_epochs",
    "max_steps": "max_steps",
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "max_length": "max_length",
    "gradient_checkpointing": "gradient_checkpointing",
    "seed": "seed",
    "save_steps": "save_steps",
}


def _train_config(config: dict) -> TrainConfig:
    """The TrainConfig ``prefsmith train`` builds from these command-line settings."""
    from prefsmith.cli.stages import build_settings

    stage, _, _ = build_settings(
        STAGES["train"], {"config": {"input": "pairs.jsonl", **config}, "engine": {}, "run": {}}
    )
    return stage.train


def _plain(value):
    return value.value if isinstance(value, enum.Enum) else value


@pytest.mark.parametrize("method", ["simpo", "dpo"])
def test_every_paper_value_reaches_the_trl_config(method):
    from prefsmith.training.trainer import trl_args

    preset = stage_preset("paper", "train", method)["train"]
    config = _train_config({"preset": "paper", "train": {"method": method}})
    args = trl_args(config, "cpu")
    for name, value in preset.items():
        if name == "finetune":  # not a TRL argument: no LoRA adapters for full fine-tuning
            assert value == "full" and config.peft_config("CAUSAL_LM") is None
            continue
        assert name in TRL_NAMES, f"preset key {name} has no TRL argument in this test"
        assert _plain(getattr(args, TRL_NAMES[name])) == value, name
    if method == "simpo":  # SimPO's published gamma/beta ratio
        assert args.simpo_gamma / args.beta == pytest.approx(0.55)
        assert (args.loss_type, args.cpo_alpha) == ("simpo", 0.0)
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 128


def test_options_given_win_over_the_preset_and_no_preset_keeps_the_defaults():
    config = _train_config({"preset": "paper", "train": {"method": "simpo", "learning_rate": 1e-5}})
    assert (config.learning_rate, config.beta, config.finetune) == (1e-5, 2.5, "full")
    assert _train_config({"train": {"method": "simpo"}}) == TrainConfig(method="simpo")
    help_text = " ".join(CliRunner().invoke(app, ["train", "--help"]).output.split())
    assert "--preset" in help_text


def test_every_preset_section_is_a_stage_that_takes_it():
    """A preset section names a stage kind whose config has a ``preset`` field and only keys
    its recipe stage takes (checked by loading a recipe with every kind under the preset)."""
    for kind in load_preset("paper"):
        assert kind in STAGES and "preset" in STAGES[kind].config.__dataclass_fields__


def test_a_recipe_under_the_paper_preset_is_the_published_loop_and_set_wins():
    plain = load_recipe("dr-sow")
    paper = load_recipe("dr-sow", ["train.train.save_steps=7"], preset="paper")
    train = paper.stage("train").config.train
    assert plain.stage("train").config.train.learning_rate == 1e-4  # the CPU recipe unchanged
    assert (train.method, train.finetune, train.beta, train.simpo_gamma) == (
        "simpo",
        "full",
        2.5,
        1.375,
    )
    assert (train.learning_rate, train.lr_scheduler, train.max_steps) == (1e-6, "cosine", -1)
    assert train.save_steps == 7  # --set wins over the preset
    sampling = paper.stage("sample").config.sampling
    assert (sampling.n, sampling.temperature, sampling.top_p, sampling.max_new_tokens) == (
        8,
        0.7,
        0.85,
        1024,
    )
    assert paper.stage("judge").config.judge.max_new_tokens == 1024
    # The published labeler: the customized density ratio with the published domains file.
    assert paper.stage("pairs").config.customization == CustomizationSpec(domains="paper")
    assert plain.stage("pairs").config.customization is None
    assert paper.raw["preset"] == "paper"
    ra = load_recipe("reward-augmented", preset="paper").stage("train").config.train
    assert (ra.method, ra.beta, ra.learning_rate, ra.num_epochs) == ("dpo", 0.01, 5e-7, 1.0)
    assert (ra.lr_scheduler, ra.batch_size * ra.grad_accum, ra.finetune) == ("cosine", 128, "full")


def test_prefsmith_run_takes_the_preset():
    result = CliRunner().invoke(app, ["run", "dr-sow", "--preset", "paper", "--check"])
    assert result.exit_code == 0, result.output
    assert "preset: paper" in result.output and "beta: 2.5" in result.output
    bad = CliRunner().invoke(app, ["run", "dr-sow", "--preset", "fast", "--check"])
    assert bad.exit_code != 0 and "unknown preset 'fast'" in " ".join(bad.output.split())


def test_pairs_and_west_of_n_take_the_published_customization_under_the_options_given():
    from prefsmith.cli.stages import build_settings

    def config(kind: str, values: dict):
        built, _, _ = build_settings(STAGES[kind], {"config": values, "engine": {}, "run": {}})
        return built

    pairs = config("pairs", {"input": "x.jsonl", "preset": "paper"})
    assert pairs.customization == CustomizationSpec(domains="paper")
    mine = config(
        "pairs", {"input": "x.jsonl", "preset": "paper", "customization": {"router": "rules"}}
    )
    assert mine.customization == CustomizationSpec(domains="paper", router="rules")
    west = config("west-of-n", {"preset": "paper", "sampling": {"n": 3}})
    assert (west.sampling.n, west.sampling.max_new_tokens) == (3, 1024)
    assert config("pairs", {"input": "x.jsonl"}).customization is None
