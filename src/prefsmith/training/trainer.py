"""Preference tuning with TRL: DPO (``DPOTrainer``), SimPO (``CPOTrainer``, SimPO loss) and
Bradley-Terry reward models (``RewardTrainer``, :mod:`prefsmith.training.reward_model`).

Output folder layout (``TrainConfig.output_dir``):

* ``checkpoint-<step>/``: transformers checkpoints (model or adapter, optimizer, scheduler, RNG
  and trainer state), every ``save_steps``; ``resume=True`` continues from the newest one;
* ``train_config.yaml``: the resolved configuration;
* ``log.jsonl``: one line per logging step (loss, rewards/accuracies, margins, learning rate)
  and per evaluation (``eval_*``, with ``eval_fraction``);
* ``loss.png``: the training loss curve (redrawn at every save and at the end);
* ``final/``: the tuned model with tokenizer (LoRA merged into the weights unless
  ``merge_lora`` is off), loadable by ``prefsmith sample``/``judge`` as a model folder;
* ``adapter/`` (LoRA): the adapter alone.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefsmith.models.loading import quiet_transformers
from prefsmith.training.config import TrainConfig
from prefsmith.training.rows import load_preference_rows, split_rows


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        output_dir: The run's folder.
        final_model: Folder of the tuned model (merged for LoRA), or the adapter folder when
            ``merge_lora`` is off.
        steps: Optimizer steps done in total (including those before a resume).
        log: Logged metrics, one dict per logging step.
        seconds: Wall time of this invocation's training.
        resumed_from: Checkpoint this invocation resumed from, if any.
        eval: Metrics on the held-out split at the end (``eval_fraction`` > 0), else ``None``.
    """

    output_dir: Path
    final_model: Path
    steps: int
    log: list[dict[str, Any]]
    seconds: float
    resumed_from: str | None
    eval: dict[str, Any] | None = None


def trl_args(config: TrainConfig, device: str) -> Any:
    """The TRL config object (``DPOConfig`` or ``CPOConfig``) for ``config``."""
    common: dict[str, Any] = {
        "output_dir": config.output_dir,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler,
        "warmup_steps": config.warmup_ratio,  # < 1 is a fraction of all steps in transformers 5
        "num_train_epochs": config.num_epochs,
        "max_steps": config.max_steps,
        "logging_steps": config.logging_steps,
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "seed": config.seed,
        "data_seed": config.seed,
        "report_to": "none",
        "use_cpu": device == "cpu",
        "bf16": config.dtype == "bfloat16" or (config.dtype == "auto" and device == "cuda"),
        "max_length": config.max_length,
        "beta": config.effective_beta,
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "disable_tqdm": False,
        **config.extra,
    }
    # TRL turns gradient checkpointing on by default; it costs a second forward pass per step,
    # so it follows our config (off unless asked for) instead.
    common.setdefault("gradient_checkpointing", config.gradient_checkpointing)
    if config.eval_fraction > 0:
        common.setdefault("eval_strategy", "steps")
        common.setdefault("eval_steps", config.save_steps)
    if config.method == "rm":
        from trl import RewardConfig

        common.pop("beta")
        return RewardConfig(**common)
    if config.method == "dpo":
        from trl import DPOConfig

        return DPOConfig(loss_type=["sigmoid"], **common)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.cpo import CPOConfig

    return CPOConfig(loss_type="simpo", cpo_alpha=0.0, simpo_gamma=config.simpo_gamma, **common)


def latest_checkpoint(output_dir: str | Path) -> str | None:
    """Newest ``checkpoint-<step>`` folder that holds a trainer state, or ``None``.

    >>> latest_checkpoint("/nonexistent") is None
    True
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = [
        (int(p.name.split("-")[1]), p)
        for p in folder.glob("checkpoint-*")
        if p.name.split("-")[1].isdigit() and (p / "trainer_state.json").exists()
    ]
    return str(max(found)[1]) if found else None


def build_trainer(config: TrainConfig, callbacks: list[Any] | None = None) -> Any:
    """Load data and policy and assemble the TRL trainer (nothing is trained yet)."""
    import torch
    from datasets import Dataset

    from prefsmith.models.loading import resolve_device

    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)  # type: ignore[arg-type]
    args = trl_args(config, device)
    if config.method == "rm":
        from prefsmith.training.reward_model import build_reward_trainer

        return build_reward_trainer(config, args, callbacks)
    rows = load_preference_rows(config.data, config.max_rows)
    policy = config.load_base()
    peft_config = config.peft_config("CAUSAL_LM")

    train_rows, eval_rows = split_rows(rows, config.eval_fraction, config.seed)
    if config.method == "dpo":
        from trl import DPOTrainer as trainer_class
    else:  # SimPO: CPO trainer with the SimPO loss (its args are set above)
        from trl.experimental.cpo import CPOTrainer as trainer_class
    return trainer_class(
        model=policy.model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=policy.tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def _log_callback(output_dir: Path) -> Any:
    """A transformers callback that appends logs to ``log.jsonl`` and redraws ``loss.png``."""
    from transformers import TrainerCallback

    from prefsmith.training.plot import plot_loss

    class PrefsmithLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[override]
            if not logs or ("loss" not in logs and "eval_loss" not in logs):
                return
            entry = {"step": state.global_step, "epoch": state.epoch, **logs}
            with (output_dir / "log.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")

        def on_save(self, args, state, control, **kwargs):  # type: ignore[override]
            plot_loss(state.log_history, output_dir / "loss.png")

    return PrefsmithLog()


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Run (or resume) a training run and save the tuned model; see the module docstring."""
    import yaml

    from prefsmith.training.plot import plot_loss

    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(output_dir) if resume else None
    if not resume and latest_checkpoint(output_dir):
        raise FileExistsError(
            f"{output_dir} already holds checkpoints; pass --resume to continue that run"
            " or choose another -o/--output folder"
        )
    if not resume:
        (output_dir / "log.jsonl").unlink(missing_ok=True)
    elif checkpoint:  # keep log.jsonl in step with the checkpoint we restart from
        _truncate_log(output_dir / "log.jsonl", int(Path(checkpoint).name.split("-")[1]))
    (output_dir / "train_config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    trainer = build_trainer(config, callbacks=[_log_callback(output_dir)])
    trainer.args.disable_tqdm = not progress
    start = time.perf_counter()
    # Checkpoints are saved inside: no "Writing model shards" bars among the training bar.
    with quiet_transformers():
        trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    metrics = trainer.evaluate() if trainer.eval_dataset is not None else None
    log = [e for e in trainer.state.log_history if "loss" in e]
    plot_loss(trainer.state.log_history, output_dir / "loss.png")
    final = save_final(trainer, config)
    steps = trainer.state.global_step
    return TrainResult(output_dir, final, steps, log, seconds, checkpoint, metrics)


def _truncate_log(path: Path, step: int) -> None:
    """Keep the ``log.jsonl`` entries up to ``step`` (a broken line is named, file:line)."""
    from prefsmith.data.io import read_jsonl_rows, repair_partial_line

    if not path.exists():
        return
    repair_partial_line(path)  # a run killed while writing its last entry
    rows = [row for row in read_jsonl_rows(path) if row.get("step", 0) <= step]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def save_final(trainer: Any, config: TrainConfig) -> Path:
    """Save the tuned model (merged when LoRA) and its tokenizer; return its folder."""
    output_dir = Path(config.output_dir)
    from prefsmith.models.loading import quiet_transformers

    model = trainer.model
    tokenizer = trainer.processing_class
    if config.finetune == "lora":
        adapter = output_dir / "adapter"
        with quiet_transformers():
            model.save_pretrained(adapter)
            tokenizer.save_pretrained(adapter)
        if not config.merge_lora:
            return adapter
        model = model.merge_and_unload()
    final = output_dir / "final"
    with quiet_transformers():
        model.save_pretrained(final)
        tokenizer.save_pretrained(final)
    return final
