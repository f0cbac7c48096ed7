"""Configuration of ``prefsmith train``: one dataclass, loadable from YAML, overridable per field.

Precedence, lowest first: the defaults below, a YAML file (``--config``), ``--set key=value``
pairs, then the dedicated command-line options (``--method``, ``--max-steps``, ...).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from prefsmith.data.io import load_yaml_file, yaml_reason

Method = Literal["dpo", "simpo", "rm"]
Finetune = Literal["lora", "full"]


@dataclass
class TrainConfig:
    """Everything a preference-tuning run needs.

    Attributes:
        data: Preference rows in TRL format (``prompt``/``chosen``/``rejected``, conversational
            or standard), e.g. the output of ``prefsmith relabel``: .jsonl, .json, .parquet or
            a saved HF dataset folder.
        model: Policy to tune: packaged model name, model folder, .gguf file or hub id.
        method: ``dpo`` (TRL ``DPOTrainer``, sigmoid loss, frozen reference = starting policy)
            or ``simpo`` (TRL ``CPOTrainer`` with ``loss_type="simpo"`` and ``cpo_alpha=0``:
            length-normalized, reference-free, no NLL term) or ``rm`` (a Bradley-Terry reward
            model: TRL ``RewardTrainer`` on a one-output classifier head over ``model``; see
            :mod:`prefsmith.training.reward_model`).
        output_dir: Where checkpoints, logs, the loss curve and the final model go.
        finetune: ``lora`` (peft adapters; the final model is also saved merged) or ``full``.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (effective scale = alpha / r).
        lora_dropout: Dropout on the LoRA path.
        lora_target_modules: Modules that get adapters; ``all-linear`` = every linear layer
            except the output layer.
        beta: DPO: inverse temperature of the implicit reward (Zhang et al. use 0.01 with full
            fine-tuning). SimPO: reward scale (the SimPO paper uses 2–2.5). ``None`` = 0.1 for
            DPO, 2.0 for SimPO.
        simpo_gamma: SimPO target reward margin (TRL's ``simpo_gamma``).
        learning_rate: Peak AdamW learning rate (LoRA wants far more than full fine-tuning).
        lr_scheduler: transformers scheduler name (``linear``, ``cosine``, ``constant``, ...).
        warmup_ratio: Fraction of steps spent warming the learning rate up.
        num_epochs: Passes over the data (ignored when ``max_steps`` > 0).
        max_steps: Optimizer steps to run; -1 = ``num_epochs`` passes.
        batch_size: Pairs per device per forward pass.
        grad_accum: Forward passes per optimizer step (effective batch = batch_size * this).
        max_length: Longest prompt + response in tokens; longer rows are truncated.
        logging_steps: Log loss and reward metrics every this many steps.
        save_steps: Write a checkpoint every this many steps.
        save_total_limit: Checkpoints kept on disk (oldest are deleted).
        seed: Seed for data order, LoRA init and dropout.
        dtype: ``auto`` (float32 on CPU, bfloat16 on CUDA), ``float32`` or ``bfloat16``.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        threads: Torch CPU threads; ``None`` leaves torch's default.
        gradient_checkpointing: Trade compute for memory.
        max_rows: Use only the first this many rows (0 = all).
        margin: ``rm`` only: subtract each pair's ``reward_margin`` column (e.g. the
            density-ratio margin of ``pairs``/``rmboost --check``) inside the Bradley-Terry loss
            (TRL's ``margin``); off by default.
        eval_fraction: Hold out this share of the pairs (seeded) as an evaluation split,
            evaluated every ``save_steps`` and at the end (0 = none).
        on_error: ``rm`` only: ``raise`` stops at the first bad pair (missing column, empty
            response, identical chosen and rejected); ``skip`` sets bad pairs aside in
            ``<output_dir>/rejected.jsonl`` and trains on the rest.
        merge_lora: With LoRA, also save the merged full model in ``final/`` (loadable like any
            model folder by ``prefsmith sample``/``judge``); the adapter is in ``adapter/``.

    >>> TrainConfig(method="simpo").model
    'smollm2-135m-instruct'
    """

    data: str = ""
    model: str = "smollm2-135m-instruct"
    method: Method = "dpo"
    output_dir: str = "runs/train"
    finetune: Finetune = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all-linear"
    beta: float | None = None
    simpo_gamma: float = 0.5
    learning_rate: float = 5e-5
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.1
    num_epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 2
    grad_accum: int = 4
    max_length: int = 512
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    threads: int | None = None
    gradient_checkpointing: bool = False
    max_rows: int = 0
    merge_lora: bool = True
    margin: bool = False
    eval_fraction: float = 0.0
    on_error: str = "raise"

    extra: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments passed verbatim to TRL's ``DPOConfig``/``CPOConfig``."""

    def __post_init__(self) -> None:
        if self.method not in ("dpo", "simpo", "rm"):
            raise ValueError(
                f"method must be dpo or simpo (preference tuning) or rm (a reward model),"
                f" not {self.method!r}"
            )
        if self.margin and self.method != "rm":
            raise ValueError("margin is an option of method rm (the reward-model loss)")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be raise or skip, not {self.on_error!r}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), not {self.eval_fraction}")
        if self.finetune not in ("lora", "full"):
            raise ValueError(f"finetune must be lora or full, not {self.finetune!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32 or bfloat16, not {self.dtype!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.batch_size < 1 or self.grad_accum < 1 or self.max_length < 8:
            raise ValueError("batch_size and grad_accum must be >= 1, max_length >= 8")

    @property
    def effective_beta(self) -> float:
        """``beta``, or the method's default when unset."""
        if self.beta is not None:
            return self.beta
        return 0.1 if self.method == "dpo" else 2.0

    def peft_config(self, task_type: str) -> Any:
        """The ``peft.LoraConfig`` of a LoRA run (``task_type`` ``CAUSAL_LM`` or ``SEQ_CLS``),
        ``None`` for full fine-tuning."""
        if self.finetune != "lora":
            return None
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.lora_target_modules,
            task_type=task_type,
        )

    def load_base(self, head: str = "causal-lm", **model_kwargs: Any) -> Any:
        """:attr:`model` loaded through :func:`prefsmith.models.loading.load_model` (this
        config's dtype, device and threads), its tokenizer ready for TRL (a chat template and a
        pad token); ``head`` and ``model_kwargs`` as there. Returns the
        :class:`~prefsmith.models.loading.LoadedModel`."""
        from prefsmith.models.encoding import ensure_chat_template
        from prefsmith.models.loading import LoadOptions, load_model

        options = LoadOptions(self.dtype, self.device, self.threads)  # type: ignore[arg-type]
        loaded = load_model(self.model, options, head, **model_kwargs)
        ensure_chat_template(loaded.tokenizer)
        if loaded.tokenizer.pad_token is None:
            loaded.tokenizer.pad_token = loaded.tokenizer.eos_token
        return loaded

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (saved as ``train_config.yaml`` in the output folder)."""
        return asdict(self)


def _field_types() -> dict[str, Any]:
    return {f.name: f for f in fields(TrainConfig)}


def parse_value(name: str, text: str) -> Any:
    """Turn a ``--set name=text`` string into the field's type (YAML syntax).

    >>> parse_value("learning_rate", "1e-4"), parse_value("max_steps", "20")
    (0.0001, 20)
    >>> parse_value("lora_target_modules", "[q_proj, v_proj]")
    ['q_proj', 'v_proj']
    >>> parse_value("nope", "1")
    Traceback (most recent call last):
    ...
    ValueError: unknown training option 'nope'
    """
    import yaml

    known = _field_types()
    if name not in known:
        raise ValueError(f"unknown training option {name!r}")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"option {name!r}: {yaml_reason(err)} in {text!r}") from None
    default = known[name].default
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(default, float) and isinstance(value, str):  # YAML reads "5e-5" as a str
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"option {name!r} needs a number, got {text!r}") from None
    return value


def load_config(
    path: str | Path | None = None,
    sets: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Build a config from defaults, a YAML file, ``key=value`` strings and explicit overrides.

    >>> load_config(sets=["max_steps=3", "beta=0.01"], overrides={"method": "simpo"}).beta
    0.01
    """
    import yaml

    values: dict[str, Any] = {}
    known = _field_types()
    if path:
        path = Path(path)
        loaded = load_yaml_file(path) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of option: value")
        for key, value in loaded.items():
            if key not in known:
                raise ValueError(f"{path}: unknown training option {key!r}")
            values[key] = parse_value(key, yaml.safe_dump(value)) if value is not None else None
    for item in sets or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        values[key.strip()] = parse_value(key.strip(), text)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key, spec in known.items():
        if key not in values and spec.default is MISSING and spec.default_factory is MISSING:
            raise ValueError(f"training option {key!r} is required")
    return TrainConfig(**values)
