"""The stages of the pipeline, each one config and one run function, registered in
:data:`~prefsmith.stages.base.STAGES`; the command line (``prefsmith <stage>``), the recipe
kinds and :func:`~prefsmith.stages.base.run_stage` all come from there.

>>> " ".join(STAGES)
'score eval study sample pairs rmboost rlaif rlcd west-of-n relabel train judge'
"""

from __future__ import annotations

from prefsmith.stages.base import (
    STAGES,
    CustomizationSpec,
    ScorerFields,
    StageContext,
    StageKind,
    StageResult,
    kind_of,
    record,
    resolve_path,
    run_stage,
)
from prefsmith.stages.evaluate import EvalStage, ScoreStage, StudyStage
from prefsmith.stages.generate import (
    PairsStage,
    RLAIFStage,
    RLCDStage,
    RMBoostStage,
    SampleStage,
    WestOfNStage,
)
from prefsmith.stages.tune import JudgeStage, RelabelStage, TrainStage

__all__ = [
    "STAGES",
    "CustomizationSpec",
    "EvalStage",
    "JudgeStage",
    "PairsStage",
    "RLAIFStage",
    "RLCDStage",
    "RMBoostStage",
    "RelabelStage",
    "SampleStage",
    "ScoreStage",
    "ScorerFields",
    "StageContext",
    "StageKind",
    "StageResult",
    "StudyStage",
    "TrainStage",
    "WestOfNStage",
    "kind_of",
    "record",
    "resolve_path",
    "run_stage",
]
