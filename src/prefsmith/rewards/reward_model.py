"""A trained reward model as a reward: a sequence classifier's scalar logit (scorer ``rm:PATH``).

The reward of a response is the single logit of a sequence-classification model (one output,
``num_labels=1``; e.g. trained by ``prefsmith train --method rm``) on the chat-template
rendering of the conversation plus the response as an assistant turn. The rendering is
:func:`rm_input_ids`, the same function ``prefsmith train --method rm`` tokenizes its pairs
with, so a model is scored exactly as it was trained. Sequences longer than ``max_length``
lose tokens from the left (the response end, where the classifier reads, is kept) and are
flagged ``truncated``. Rows are padded on the right, so rewards do not depend on the batch.

This reward reads no log-probs, so it ignores the log-prob cache; its rows record the number
of tokens of the whole rendered sequence under ``response_tokens``.

>>> from prefsmith.testing import tiny_reward_model
>>> reward = RewardModelReward(tiny_reward_model(seed=0))
>>> row = reward.score([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])[0]
>>> isinstance(row["reward_margin"], float), row["scored_with"]["scorer"].startswith("rm:")
(True, True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prefsmith.data.messages import Message, common_prefix_length
from prefsmith.models.backend import ResponseLogProbs, ScoreRequest
from prefsmith.models.encoding import ensure_chat_template
from prefsmith.models.invariance import MIN_MATMUL_ROWS, invariant_kernels
from prefsmith.models.pool import ModelOptions
from prefsmith.rewards.base import Reward, ScoredResponse

__all__ = ["RewardModelReward", "load_reward_model", "rm_input_ids"]


def rm_input_ids(
    tokenizer: Any, messages: Sequence[Message], response: str, max_length: int | None = None
) -> tuple[list[int], str | None]:
    """Token ids a reward model reads for ``response`` after ``messages``, and truncation.

    The conversation plus ``{"role": "assistant", "content": response}`` rendered with the chat
    template (prefsmith's plain template when the tokenizer has none), tokenized as TRL's
    ``RewardTrainer`` tokenizes conversational rows. Longer than ``max_length``: tokens are cut
    from the left (a leading BOS is kept), and the flag says whether only ``prompt`` tokens or
    also ``response`` tokens were lost.

    >>> from prefsmith.testing import tiny_tokenizer
    >>> tok = tiny_tokenizer("chatml")
    >>> ids, cut = rm_input_ids(tok, [{"role": "user", "content": "Hi"}], "Hello!")
    >>> cut, tok.decode(ids).endswith("Hello!<|im_end|>\\n")
    (None, True)
    >>> rm_input_ids(tok, [{"role": "user", "content": "Hi " * 50}], "Hello!", 12)[1]
    'prompt'
    """
    ensure_chat_template(tokenizer)
    conversation = [dict(m) for m in messages] + [{"role": "assistant", "content": response}]
    ids = _chat_ids(tokenizer, conversation)
    if max_length is None or len(ids) <= max_length:
        return ids, None
    prompt = _chat_ids(tokenizer, [dict(m) for m in messages], add_generation_prompt=True)
    n_response = len(ids) - common_prefix_length(prompt, ids)
    keep_bos = tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
    tail = ids[len(ids) - (max_length - int(keep_bos)) :]
    cut = "prompt" if len(tail) >= n_response else "response"
    return ([ids[0]] if keep_bos else []) + tail, cut


def _chat_ids(tokenizer: Any, conversation: list[dict[str, Any]], **kwargs: Any) -> list[int]:
    out = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True, **kwargs)
    return list(out["input_ids"])


def load_reward_model(path: str, device: str = "cpu", dtype: Any = None) -> tuple[Any, Any]:
    """Load a one-output sequence classifier and its tokenizer from a folder (or hub cache).

    Raises ``ValueError`` when the folder holds no sequence-classification model with one
    output (a causal LM, say), naming what it found.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from prefsmith.models.loading import model_files, quiet_transformers

    folder = model_files(path)
    with quiet_transformers():
        config = AutoConfig.from_pretrained(folder)
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ValueError(
            f"{path} is not a sequence-classification reward model (architectures:"
            f" {', '.join(architectures) or 'none'}); train one with `prefsmith train --method rm`"
        )
    if getattr(config, "num_labels", None) != 1:
        raise ValueError(f"{path}: a reward model has one output, this one has {config.num_labels}")
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    return model, tokenizer


class RewardModelReward(Reward):
    """A sequence-classification reward model (``rm:PATH``): reward = its logit.

    Args:
        path: Folder of the reward model (e.g. ``<run>/final`` of ``prefsmith train --method
            rm``), or a hub id in the local cache.
        options: Device, dtype, threads, ``max_length`` and batching (as for other scorers).

    See the module docstring for the rendering; :func:`rm_input_ids` is shared with training.

    >>> from prefsmith.testing import tiny_reward_model
    >>> reward = RewardModelReward(tiny_reward_model(seed=0))
    >>> reward.name.startswith("rm:"), reward.passes
    (True, 1)
    >>> rows = reward.score([{"prompt": "Hi", "responses": ["Hello!", "Go away."]}])
    >>> len(rows[0]["rewards"])
    2
    """

    kind = "rm"
    customization = None

    def __init__(self, path: str | Path, options: ModelOptions | None = None) -> None:
        self.path = str(path)
        self.options = options or ModelOptions()

    @property
    def name(self) -> str:
        return f"rm:{self.path}"

    @property
    def passes(self) -> int:
        return 1

    @functools.cached_property
    def _loaded(self) -> tuple[Any, Any]:
        import torch

        from prefsmith.models.loading import resolve_device, resolve_dtype

        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        device = resolve_device(self.options.device)  # type: ignore[arg-type]
        dtype = resolve_dtype(self.options.dtype, device)  # type: ignore[arg-type]
        return load_reward_model(self.path, device, dtype)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Hash of the reward model's weights."""
        from prefsmith.models.loading import fingerprint_directory, model_files

        return fingerprint_directory(model_files(self.path))

    def tokenizers(self) -> tuple[Any, Any | None]:
        return self._loaded[1], None

    def score_requests(
        self, requests: Sequence[ScoreRequest], on_progress: Callable[[int], None] | None = None
    ) -> list[ScoredResponse]:
        import torch

        model, tokenizer = self._loaded
        encoded = [
            rm_input_ids(tokenizer, r.messages, r.response, self.options.max_length)
            for r in requests
        ]
        rewards: list[float] = [0.0] * len(requests)
        order = sorted(range(len(requests)), key=lambda k: -len(encoded[k][0]))
        pad = model.config.pad_token_id
        device = next(model.parameters()).device
        invariant = self.options.batch_invariant
        start = 0
        while start < len(order):
            width = len(encoded[order[start]][0])
            size = max(1, min(self.options.max_batch_size, self.options.batch_tokens // width))
            if invariant:  # one sequence per pass, at least MIN_MATMUL_ROWS wide
                size, width = 1, max(width, MIN_MATMUL_ROWS)
            batch = order[start : start + size]
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, k in enumerate(batch):
                seq = encoded[k][0]
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            with invariant_kernels(invariant):
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for row, k in enumerate(batch):
                rewards[k] = float(logits[row, 0].float())
            if on_progress:
                on_progress(len(batch))
            start += size
        return [
            ScoredResponse(
                rewards[k],
                ResponseLogProbs(tuple(encoded[k][0]), np.zeros(0), len(r.response), encoded[k][1]),
            )
            for k, r in enumerate(requests)
        ]

    def settings(self) -> dict[str, Any]:
        return {
            "scorer": self.name,
            "kind": self.kind,
            "model": {"name": self.path, "fingerprint": self.fingerprint},
            "reduction": "logit",
            "max_length": self.options.max_length,
        }
