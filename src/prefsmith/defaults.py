"""prefsmith's defaults, defined once: the model pair, the generator, dtypes, devices, seed.

Every command, config and function that needs one of these imports it from here.

>>> DEFAULT_STRONG, DEFAULT_WEAK
('smollm2-135m-instruct', 'gemma3-270m')
>>> "float64" in SCORING_DTYPES, "float64" in GENERATION_DTYPES
(True, False)
"""

from __future__ import annotations

from typing import Literal, get_args

#: The strong (better aligned) model of the embedded default pair: SmolLM2-135M-Instruct.
DEFAULT_STRONG = "smollm2-135m-instruct"
#: The weak (less aligned) model of the embedded default pair: gemma-3-270m base.
DEFAULT_WEAK = "gemma3-270m"
#: The default policy for sampling, RMBoost and judging.
DEFAULT_GENERATOR = DEFAULT_STRONG
#: The default pairwise judge of ``prefsmith rlaif``.
DEFAULT_JUDGE = DEFAULT_STRONG
#: The default base of ``prefsmith train --method rm`` (a one-output head on it).
DEFAULT_RM_BASE = DEFAULT_STRONG
#: Default reduction of token log-ratios (RewardBench's DPO scoring).
DEFAULT_REDUCTION = "sum"
#: Default rendering of a strong/weak pair with different tokenizers: each model its own
#: chat template (see :data:`RenderingName`).
DEFAULT_RENDERING = "own"
#: Scorer presets (``--quality``), measured held-out on RewardBench dev and shipped as fits
#: (docs/benchmarks.md: accuracy and cost of each): ``default`` scores with the run's own scorer
#: settings (the default pair: 56.6); ``balanced`` the Qwen2.5-Coder-1.5B/gemma-3-270m density
#: ratio with a fitted length penalty (71.4, 2.5x the default pair's time); ``best`` the
#: ensemble of 3 scorers (71.9, 7.6x).
QUALITY_SCORERS: dict[str, str | None] = {
    "default": None,
    "balanced": "fitted:rewardbench-dev-qwen15-length",
    "best": "fitted:rewardbench-dev-qwen15-ensemble",
}
#: A scorer preset (see :data:`QUALITY_SCORERS`).
QualityName = Literal["default", "balanced", "best"]
#: Default seed of every random draw (sampling, RMBoost labels, bootstrap intervals).
DEFAULT_SEED = 0
#: Default dtype: float32 on CPU, bfloat16 on CUDA.
DEFAULT_DTYPE = "auto"
#: Default device: CUDA when available.
DEFAULT_DEVICE = "auto"
#: Longest scored sequence in tokens.
DEFAULT_MAX_LENGTH = 2048

#: A dtype accepted for scoring (float64 is the exact reference; generation refuses it).
ScoringDType = Literal["auto", "float32", "bfloat16", "float16", "float64"]
#: A device.
Device = Literal["auto", "cpu", "cuda"]
#: A reduction of token log-ratios.
ReductionName = Literal["sum", "mean", "mean-char"]
#: How the weak model of a pair with different tokenizers sees the conversation: ``own`` (its
#: own chat template, or the plain one) or ``same-text`` (the strong model's rendered text).
RenderingName = Literal["own", "same-text"]
#: Dtypes accepted for scoring.
SCORING_DTYPES: tuple[str, ...] = get_args(ScoringDType)
#: Dtypes accepted for generation and training.
GENERATION_DTYPES = ("auto", "float32", "bfloat16", "float16")
#: Devices accepted everywhere.
DEVICES: tuple[str, ...] = get_args(Device)
#: Reductions of token log-ratios.
REDUCTIONS: tuple[str, ...] = get_args(ReductionName)
#: Renderings of a pair with different tokenizers.
RENDERINGS: tuple[str, ...] = get_args(RenderingName)
#: The default engine: transformers in this process, the reference (the engines themselves are
#: named in :data:`prefsmith.models.engines.ENGINES`). Its outputs and cache keys do not record
#: the engine, so they stay those of the runs made before there were engines.
DEFAULT_ENGINE = "hf"
#: How bad input rows are handled.
ON_ERROR = ("raise", "skip")
