"""prefsmith: preference data for LLM alignment from off-the-shelf open models.

Three lines score preference data (rows or a ``datasets.Dataset``)::

    from prefsmith import DensityRatioReward
    reward = DensityRatioReward(strong="smollm2-135m-instruct", weak="gemma3-270m")
    scored = reward.score(rows)

The names below load lazily (as TRL's ``__init__`` does): ``import prefsmith`` imports neither
torch nor transformers; the first use of an object imports the module that defines it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> module that defines it.
_EXPORTS = {
    # rewards
    "DensityRatioReward": "prefsmith.rewards.density_ratio",
    "DPOReward": "prefsmith.rewards.density_ratio",
    "LogProbReward": "prefsmith.rewards.density_ratio",
    "RewardModelReward": "prefsmith.rewards.reward_model",
    "ContrastReward": "prefsmith.rewards.contrast",
    "FittedReward": "prefsmith.rewards.fitted",
    "Reward": "prefsmith.rewards.base",
    "parse_scorer": "prefsmith.rewards.spec",
    "ScoreStep": "prefsmith.rewards.base",
    "ModelOptions": "prefsmith.models.pool",
    "ModelPool": "prefsmith.models.pool",
    "LogProbCache": "prefsmith.models.cache",
    # customization
    "Customization": "prefsmith.routing.customize",
    # evaluation
    "evaluate": "prefsmith.evaluation.harness",
    "evaluate_file": "prefsmith.evaluation.harness",
    "run_study": "prefsmith.evaluation.study",
    "FitOptions": "prefsmith.evaluation.fit",
    "run_fits": "prefsmith.evaluation.fit",
    # generation
    "SamplingConfig": "prefsmith.generation.sampling",
    "SampleStep": "prefsmith.generation.sampling",
    "PairsOptions": "prefsmith.generation.pairs",
    "PairsStep": "prefsmith.generation.pairs",
    "select_pairs": "prefsmith.generation.pairs",
    "RMBoostConfig": "prefsmith.generation.rmboost",
    "RMBoostStep": "prefsmith.generation.rmboost",
    "PairwiseJudge": "prefsmith.generation.baselines",
    "RLAIFStep": "prefsmith.generation.baselines",
    "RLCDConfig": "prefsmith.generation.baselines",
    "RLCDStep": "prefsmith.generation.baselines",
    "WestOfNStep": "prefsmith.generation.baselines",
    # relabeling
    "RelabelOptions": "prefsmith.relabel.step",
    "RelabelStep": "prefsmith.relabel.step",
    "GoalScale": "prefsmith.relabel.scale",
    # training
    "TrainConfig": "prefsmith.training.config",
    # stages: one config per stage, run by run_stage (the CLI and recipes use them)
    "run_stage": "prefsmith.stages.base",
    "StageContext": "prefsmith.stages.base",
    "STAGES": "prefsmith.stages.base",
    "ScoreStage": "prefsmith.stages.evaluate",
    "EvalStage": "prefsmith.stages.evaluate",
    "StudyStage": "prefsmith.stages.evaluate",
    "SampleStage": "prefsmith.stages.generate",
    "PairsStage": "prefsmith.stages.generate",
    "RMBoostStage": "prefsmith.stages.generate",
    "RLAIFStage": "prefsmith.stages.generate",
    "RLCDStage": "prefsmith.stages.generate",
    "WestOfNStage": "prefsmith.stages.generate",
    "RelabelStage": "prefsmith.stages.tune",
    "TrainStage": "prefsmith.stages.tune",
    "JudgeStage": "prefsmith.stages.tune",
    # recipes
    "run_recipe": "prefsmith.recipes.run",
    "load_recipe": "prefsmith.recipes.load",
    "RecipeResult": "prefsmith.recipes.run",
    # online RL
    "reward_function": "prefsmith.integrations.trl",
    "ServeConfig": "prefsmith.integrations.config",
    "create_app": "prefsmith.integrations.server",
    # the row runner
    "run_rows": "prefsmith.data.runner",
    "process_rows": "prefsmith.data.runner",
    "RunOptions": "prefsmith.data.runner",
    "Step": "prefsmith.data.step",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from prefsmith.data.runner import RunOptions, process_rows, run_rows
    from prefsmith.data.step import Step
    from prefsmith.evaluation.fit import FitOptions, run_fits
    from prefsmith.evaluation.harness import evaluate, evaluate_file
    from prefsmith.evaluation.study import run_study
    from prefsmith.generation.baselines import (
        PairwiseJudge,
        RLAIFStep,
        RLCDConfig,
        RLCDStep,
        WestOfNStep,
    )
    from prefsmith.generation.pairs import PairsOptions, PairsStep, select_pairs
    from prefsmith.generation.rmboost import RMBoostConfig, RMBoostStep
    from prefsmith.generation.sampling import SampleStep, SamplingConfig
    from prefsmith.integrations.config import ServeConfig
    from prefsmith.integrations.server import create_app
    from prefsmith.integrations.trl import reward_function
    from prefsmith.models.cache import LogProbCache
    from prefsmith.models.pool import ModelOptions, ModelPool
    from prefsmith.recipes.load import load_recipe
    from prefsmith.recipes.run import RecipeResult, run_recipe
    from prefsmith.relabel.scale import GoalScale
    from prefsmith.relabel.step import RelabelOptions, RelabelStep
    from prefsmith.rewards.base import Reward, ScoreStep
    from prefsmith.rewards.contrast import ContrastReward
    from prefsmith.rewards.density_ratio import DensityRatioReward, DPOReward, LogProbReward
    from prefsmith.rewards.fitted import FittedReward
    from prefsmith.rewards.reward_model import RewardModelReward
    from prefsmith.rewards.spec import parse_scorer
    from prefsmith.routing.customize import Customization
    from prefsmith.stages import (
        STAGES,
        EvalStage,
        JudgeStage,
        PairsStage,
        RelabelStage,
        RLAIFStage,
        RLCDStage,
        RMBoostStage,
        SampleStage,
        ScoreStage,
        StageContext,
        StudyStage,
        TrainStage,
        WestOfNStage,
        run_stage,
    )
    from prefsmith.training.config import TrainConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prefsmith' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
