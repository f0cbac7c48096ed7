"""Bradley-Terry reward models (``prefsmith train --method rm``) with TRL's ``RewardTrainer``.

The base is any causal LM prefsmith loads (packaged name, folder, ``.gguf``, hub id) with a
fresh one-output classification head (``AutoModelForSequenceClassification``,
``num_labels=1``); fine-tuning is full or LoRA (the head is always trained). The loss is
``-log sigmoid(r(chosen) - r(rejected) [- margin])``; with ``margin: true`` the margin is the
file's ``reward_margin`` column (the density-ratio margin written by ``pairs``,
``west-of-n`` and ``rmboost --check``), TRL's ``margin``.

Every pair is tokenized by :func:`~prefsmith.rewards.reward_model.rm_input_ids`, the function
the ``rm:PATH`` scorer uses: standard rows (strings) become one user turn and one assistant
turn, so a model is trained and scored on the same chat-template rendering; sequences longer
than ``max_length`` lose tokens from the left instead of being dropped.

Rows are validated before the model loads (:func:`prepare_reward_pair`): missing columns,
empty responses, identical chosen and rejected responses and a missing or non-numeric
``reward_margin`` (with ``margin``) raise a :class:`~prefsmith.data.rows.RowError` naming
``file:line``, or with ``on_error: skip`` go to ``<output_dir>/rejected.jsonl``.

The run folder is the one of :mod:`prefsmith.training.trainer` (checkpoints, resume,
``log.jsonl``, ``loss.png``, ``final/``); ``final/`` is the reward model, loadable by
``prefsmith eval --scorer rm:<run>/final``.

>>> prepare_reward_pair({"prompt": "q", "chosen": "a", "rejected": "b", "reward_margin": 2})
{'prompt': [{'role': 'user', 'content': 'q'}], 'chosen': 'a', 'rejected': 'b', 'margin': 2.0}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefsmith.data.io import INDEX_FIELD
from prefsmith.data.rows import RowError
from prefsmith.training.config import TrainConfig
from prefsmith.training.rows import split_rows, validate_preference_row


def _text(value: Any) -> str:
    """The response text of a standard (str) or conversational (one assistant turn) value."""
    if isinstance(value, str):
        return value
    return "".join(m["content"] for m in value if m.get("role") == "assistant")


def prepare_reward_pair(row: Mapping[str, Any], margin: bool = True) -> dict[str, Any]:
    """A pair as the reward trainer reads it: prompt messages, two response texts, margin.

    Raises ``ValueError`` saying what is wrong (see the module docstring). With ``margin``
    the row's ``reward_margin``, when present, is kept as ``margin`` (:func:`load_reward_pairs`
    requires it in every row).

    >>> prepare_reward_pair({"prompt": "q", "chosen": "same", "rejected": " same"})
    Traceback (most recent call last):
    ...
    ValueError: chosen and rejected are the same response
    >>> prepare_reward_pair({"prompt": "q", "chosen": "a"})
    Traceback (most recent call last):
    ...
    ValueError: missing field(s) rejected (TRL preference format)
    """
    values = validate_preference_row(dict(row))
    prompt = values["prompt"]
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    chosen, rejected = _text(values["chosen"]), _text(values["rejected"])
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise ValueError(f"the {name} response is empty")
    if chosen.strip() == rejected.strip():
        raise ValueError("chosen and rejected are the same response")
    out: dict[str, Any] = {"prompt": messages, "chosen": chosen, "rejected": rejected}
    if margin:
        value = row.get("reward_margin")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"field 'reward_margin' must be a number, got {value!r}")
            out["margin"] = float(value)
    return out


def load_reward_pairs(
    path: str | Path, max_rows: int = 0, margin: bool = False, on_error: str = "raise"
) -> tuple[list[dict[str, Any]], list[RowError]]:
    """Validated pairs of ``path`` and the bad rows (raised at once with ``on_error=raise``).

    With ``margin`` every row must carry a numeric ``reward_margin``.
    """
    from prefsmith.data.runner import first_error, read_items

    def prepare(row: Mapping[str, Any]) -> dict[str, Any]:
        pair = prepare_reward_pair(row, margin)
        if margin and "margin" not in pair:
            raise ValueError("margin: true needs a numeric 'reward_margin' field in every row")
        return pair

    items, bad = read_items(path, prepare, max_rows or None)
    if bad and on_error == "raise":
        raise first_error(bad, None)
    if not items:
        raise ValueError(f"{path}: no usable preference rows")
    return [item.item for item in items], bad


def tokenize_pairs(
    tokenizer: Any, pairs: Sequence[Mapping[str, Any]], max_length: int
) -> list[dict[str, Any]]:
    """``chosen_ids``/``rejected_ids`` (and ``margin``) rows, TRL's pre-tokenized format."""
    from prefsmith.rewards.reward_model import rm_input_ids

    out = []
    for pair in pairs:
        row = {
            "chosen_ids": rm_input_ids(tokenizer, pair["prompt"], pair["chosen"], max_length)[0],
            "rejected_ids": rm_input_ids(tokenizer, pair["prompt"], pair["rejected"], max_length)[
                0
            ],
        }
        if "margin" in pair:
            row["margin"] = pair["margin"]
        out.append(row)
    return out


def load_reward_base(config: TrainConfig) -> tuple[Any, Any]:
    """The base model with a fresh one-output head (seeded), and its tokenizer (pad set)."""
    from transformers import set_seed

    set_seed(config.seed)  # the head is initialized at random
    base = config.load_base("sequence-classification", num_labels=1)
    base.model.config.pad_token_id = base.tokenizer.pad_token_id
    return base.model, base.tokenizer


def write_rejected(output_dir: Path, bad: Sequence[RowError]) -> Path | None:
    """Write bad rows (location and reason) to ``<output_dir>/rejected.jsonl``."""
    path = output_dir / "rejected.jsonl"
    path.unlink(missing_ok=True)
    if not bad:
        return None
    with path.open("w", encoding="utf-8") as handle:
        for err in bad:
            entry = {INDEX_FIELD: getattr(err, "key", None), "location": err.location}
            handle.write(json.dumps({**entry, "reason": err.reason}) + "\n")
    return path


def build_reward_trainer(config: TrainConfig, args: Any, callbacks: list[Any] | None) -> Any:
    """TRL's ``RewardTrainer`` for ``config`` (data checked, base loaded, nothing trained)."""
    from datasets import Dataset
    from trl import RewardTrainer

    pairs, bad = load_reward_pairs(config.data, config.max_rows, config.margin, config.on_error)
    write_rejected(Path(config.output_dir), bad)
    model, tokenizer = load_reward_base(config)
    rows = tokenize_pairs(tokenizer, pairs, config.max_length)
    train_rows, eval_rows = split_rows(rows, config.eval_fraction, config.seed)
    peft_config = config.peft_config("SEQ_CLS")
    return RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
