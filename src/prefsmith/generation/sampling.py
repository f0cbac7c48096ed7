"""Batched, seeded sampling from a causal LM with its chat template.

:func:`generate` samples ``n`` responses per conversation with ``transformers``' ``generate``
(left padding, KV cache, CPU or GPU). Temperature and top-p (nucleus) sampling are done by
prefsmith's own logits processor, :class:`~prefsmith.models.sampler.SeededSampler`, which
gives every sequence its own ``torch.Generator``. The seed of sample ``j`` of a conversation
is derived from ``(config.seed, the conversation's messages, j)`` only (:func:`sample_seed`), so:

* the same seed gives the same samples whatever the batch size, the order of the prompts, the
  other prompts in the batch, or whether the run was interrupted and resumed;
* asking for ``n=8`` gives the ``n=4`` samples followed by four more;
* two identical conversations get identical samples (give them different system prompts or
  seeds if that is unwanted).

(Batches of different shapes can differ in the last floating-point bits of the logits; a draw
could then flip only where its uniform number falls within that rounding of a token
boundary.)

Generation stops at the tokenizer's EOS, the model's configured EOS ids and the end-of-turn
token of common chat templates; a sequence that reaches ``max_new_tokens`` first is reported
with ``finish_reason="length"``. Special tokens are removed from the text and surrounding
whitespace is stripped (templates add their own separators).

:class:`SampleStep` is the ``sample`` stage; :func:`~prefsmith.data.runner.run_rows` runs it
on files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from prefsmith.data.io import INDEX_FIELD
from prefsmith.data.rows import PROMPT_COLUMNS, to_prompt
from prefsmith.data.step import Advance, Outcome, RowItem, Step
from prefsmith.defaults import DEFAULT_ENGINE, DEFAULT_SEED
from prefsmith.models.encoding import Message, adds_bos, ensure_chat_template
from prefsmith.models.engines import Engine, SampleOptions, SampleRequest, as_engine
from prefsmith.models.engines.base import check_sampling
from prefsmith.models.loading import LoadedModel, LoadOptions
from prefsmith.rewards.base import short_hash


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are sampled.

    Attributes:
        n: Responses per prompt.
        temperature: Softmax temperature; ``0`` means greedy decoding (all ``n`` identical).
        top_p: Nucleus sampling: keep the smallest set of most likely tokens whose probability
            reaches ``top_p`` (``1.0`` keeps every token).
        max_new_tokens: Most tokens generated per response (the end-of-turn token included);
            a response cut there is reported with ``finish_reason="length"``.
        seed: Base seed; sample ``j`` of a conversation uses :func:`sample_seed`.
        batch_size: Sequences generated together in one ``generate`` call.
        system_prompt: System turn put before conversations that have none.

    >>> SamplingConfig(n=8, temperature=0.7, top_p=0.85).max_new_tokens
    512
    """

    n: int = 4
    temperature: float = 0.7
    top_p: float = 0.85
    max_new_tokens: int = 512
    seed: int = DEFAULT_SEED
    batch_size: int = 8
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        check_sampling(self.max_new_tokens, self.temperature, self.top_p, self.batch_size)


@dataclass(frozen=True)
class Generation:
    """One sampled response.

    Attributes:
        text: The response text (special tokens removed, whitespace stripped).
        finish_reason: ``stop`` (an end-of-turn/EOS token was generated) or ``length``
            (``max_new_tokens`` was reached first: the text is truncated).
        n_tokens: Tokens generated, the stop token included.
    """

    text: str
    finish_reason: str
    n_tokens: int


#: End-of-turn tokens of common chat templates, used as stop tokens when in the vocabulary.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


def sample_seed(seed: int, conversation: Sequence[Message], index: int) -> int:
    """Seed of sample ``index`` of ``conversation``: a hash of the three, as a 63-bit int.

    >>> conv = [{"role": "user", "content": "hi"}]
    >>> sample_seed(0, conv, 0) == sample_seed(0, conv, 0)
    True
    >>> len({sample_seed(0, conv, 0), sample_seed(0, conv, 1), sample_seed(1, conv, 0)})
    3
    """
    payload = json.dumps([seed, index, [dict(m) for m in conversation]], sort_keys=True)
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "big") >> 1


def with_system_prompt(
    conversation: Sequence[Message], system_prompt: str | None
) -> tuple[Message, ...]:
    """Put ``system_prompt`` first unless the conversation has its own system turn.

    >>> with_system_prompt([{"role": "user", "content": "hi"}], "Be brief.")[0]
    {'role': 'system', 'content': 'Be brief.'}
    >>> len(with_system_prompt([{"role": "user", "content": "hi"}], None))
    1
    """
    conversation = tuple(conversation)
    if system_prompt and not (conversation and conversation[0]["role"] == "system"):
        return ({"role": "system", "content": system_prompt}, *conversation)
    return conversation


def stop_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """Ids that end a response: the EOS ids (the tokenizer's, and those of ``model``'s
    ``generation_config``: a transformers model or an engine) and any known end-of-turn token
    in the vocabulary."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, configured):
        ids.extend(value if isinstance(value, list) else [value] if value is not None else [])
    specials = set(tokenizer.all_special_tokens) | set(
        getattr(tokenizer, "added_tokens_encoder", {}) or {}
    )
    for token in END_OF_TURN_TOKENS:
        if token in specials:
            ids.append(tokenizer.convert_tokens_to_ids(token))
    return sorted(set(ids))


def prompt_ids(tokenizer: Any, conversation: Sequence[Message]) -> list[int]:
    """Token ids of a conversation rendered with ``add_generation_prompt``, BOS exactly once.

    Same rendering as :class:`prefsmith.models.encoding.ConversationEncoder` (the scorer), so
    the scorer conditions on exactly the prompt the generator saw.
    """
    ensure_chat_template(tokenizer)
    text = tokenizer.apply_chat_template(
        list(conversation), tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if adds_bos(tokenizer) and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    return ids


class PromptTooLongError(ValueError):
    """A prompt plus ``max_new_tokens`` does not fit the model's context."""


def context_length(model: Any) -> int | None:
    """Most positions the model supports, when its config says."""
    return getattr(model.config, "max_position_embeddings", None)


def generate(
    model: LoadedModel | Engine,
    conversations: Sequence[Sequence[Message]],
    config: SamplingConfig,
    on_progress: Callable[[int], None] | None = None,
) -> list[list[Generation]]:
    """Sample ``config.n`` responses for each conversation (each ends with a user turn).

    ``model`` is any engine (:mod:`prefsmith.models.engines`, e.g. ``hf`` or ``vllm``) or a
    model in memory (sampled with the ``hf`` engine). The conversations are rendered here, with
    the model's chat template, and the engine gets token ids: prompt ids and one seed per
    sample, :func:`sample_seed` of ``(config.seed, conversation, j)``.

    Returns one list of ``n`` :class:`Generation` per conversation, in input order.
    ``on_progress(k)`` is called as ``k`` more sequences finish.
    """
    engine = as_engine(model)
    tokenizer = engine.tokenizer
    convs = [with_system_prompt(c, config.system_prompt) for c in conversations]
    for i, conv in enumerate(convs):
        if not conv or conv[-1]["role"] != "user":
            raise ValueError(f"conversation {i} must end with a user turn")
    encoded = [prompt_ids(tokenizer, conv) for conv in convs]
    limit = engine.max_positions
    for i, ids in enumerate(encoded):
        if limit is not None and len(ids) + config.max_new_tokens > limit:
            raise PromptTooLongError(
                f"conversation {i}: {len(ids)} prompt tokens + max_new_tokens"
                f" {config.max_new_tokens} exceed the model's {limit} positions"
            )
    stops = stop_token_ids(tokenizer, engine)
    requests = [
        SampleRequest(tuple(ids), tuple(sample_seed(config.seed, conv, j) for j in range(config.n)))
        for conv, ids in zip(convs, encoded, strict=True)
    ]
    options = SampleOptions(
        max_new_tokens=config.max_new_tokens,
        stop_ids=tuple(stops),
        temperature=config.temperature,
        top_p=config.top_p,
        batch_size=config.batch_size,
    )
    completions = engine.sample(requests, options, on_progress)
    return [[Generation(c.text, c.finish_reason, c.n_tokens) for c in per] for per in completions]


# --------------------------------------------------------------------------------------------
# The sample step


def generator_settings(engine: Engine, config: SamplingConfig) -> dict[str, Any]:
    """What produced the samples, recorded in every row (``generated_with``).

    The chat template is recorded by hash (the full text goes to ``<output>.settings.json``).
    """
    template = ensure_chat_template(engine.tokenizer)
    settings = {
        "model": engine.name,
        "fingerprint": engine.fingerprint,
        "template": short_hash(str(template)),
        **asdict(config),
    }
    if engine.kind != DEFAULT_ENGINE:  # engines draw different samples from the same seeds
        settings["engine"] = engine.kind
    return settings


#: Input fields not copied to sample rows (they would clash with the fields written).
_SAMPLE_FIELDS = ("responses", "finish_reasons", "n_tokens", "generated_with", INDEX_FIELD)


def prompt_room(
    engine: Engine, config: SamplingConfig, max_prompt_tokens: int | None
) -> int | None:
    """Most prompt tokens allowed: the engine's positions minus ``max_new_tokens``, and the
    user's cap."""
    limit = engine.max_positions
    room = None if limit is None else limit - config.max_new_tokens
    if max_prompt_tokens is not None:
        room = max_prompt_tokens if room is None else min(room, max_prompt_tokens)
    return room


def check_prompt(
    row: Any, engine: Engine, config: SamplingConfig, room: int | None
) -> tuple[Message, ...]:
    """The row's conversation; raises ``ValueError`` if malformed or longer than ``room``."""
    conversation = to_prompt(row, config.system_prompt)
    if room is not None:
        ensure_chat_template(engine.tokenizer)
        n = len(prompt_ids(engine.tokenizer, conversation))
        if n > room:
            raise ValueError(f"prompt has {n} tokens, more than the {room} allowed")
    return conversation


class SampleStep(Step):
    """Sample ``config.n`` responses per prompt (``prefsmith sample``).

    Input columns: ``prompt`` (str or messages) or ``messages``; other columns are kept.
    Output columns added: ``responses``, ``finish_reasons`` (``stop``/``length``),
    ``n_tokens`` and ``generated_with`` (model, fingerprint, template hash, sampling config):
    the ``prompt`` + ``responses`` shape that ``score`` and ``pairs`` read. Seeds depend only on
    the conversation and the base seed (:func:`sample_seed`), so a resumed run writes what an
    uninterrupted one would.

    Args:
        model: The generator: a name (the ``hf`` engine, weights loaded on first use), an
            engine (``load_engine(name, "vllm")`` samples with vLLM) or a loaded model.
        config: How to sample.
        max_prompt_tokens: Prompts longer than this (after the chat template) are rejected;
            ``None`` allows what fits the model's context with ``max_new_tokens``.
        load_options: How the weights load (for a model given by name).

    >>> from prefsmith.data.runner import process_rows
    >>> from prefsmith.testing import tiny_model
    >>> step = SampleStep(tiny_model(seed=0), SamplingConfig(n=2, max_new_tokens=4))
    >>> row = process_rows([{"prompt": "Say hi."}], step)[0]
    >>> len(row["responses"]), set(row["finish_reasons"]) <= {"stop", "length"}
    (2, True)
    """

    name = "sample"
    input_columns = "prompt (text or messages) or messages"
    required_columns = PROMPT_COLUMNS
    output_columns = ("responses", "finish_reasons", "n_tokens", "generated_with")

    def __init__(
        self,
        model: str | Engine | LoadedModel,
        config: SamplingConfig | None = None,
        max_prompt_tokens: int | None = None,
        load_options: LoadOptions | None = None,
    ) -> None:
        self.model = as_engine(model, load_options)
        self.config = config or SamplingConfig()
        self.room = prompt_room(self.model, self.config, max_prompt_tokens)
        self._settings: dict[str, Any] | None = None

    def prepare(self, row: Any) -> tuple[Message, ...]:
        return check_prompt(row, self.model, self.config, self.room)

    def settings(self) -> dict[str, Any]:
        if self._settings is None:
            self._settings = generator_settings(self.model, self.config)
        return {**self._settings, "template_text": self.model.tokenizer.chat_template}

    def process(self, batch: Sequence[RowItem], advance: Advance) -> list[Outcome]:
        settings = {k: v for k, v in self.settings().items() if k != "template_text"}
        n = self.config.n
        generations = generate(
            self.model, [b.item for b in batch], self.config, lambda k: advance(k / n)
        )
        outcomes = []
        for b, gens in zip(batch, generations, strict=True):
            row = {k: v for k, v in b.row.items() if k not in _SAMPLE_FIELDS}
            row["responses"] = [g.text for g in gens]
            row["finish_reasons"] = [g.finish_reason for g in gens]
            row["n_tokens"] = [g.n_tokens for g in gens]
            row["generated_with"] = settings
            counts = {
                "samples": len(gens),
                "truncated samples": sum(g.finish_reason == "length" for g in gens),
                "tokens": sum(g.n_tokens for g in gens),
            }
            outcomes.append(Outcome([row], counts=counts))
        return outcomes
