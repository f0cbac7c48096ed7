"""The ``hf`` engine: transformers in this process (CPU or one GPU), the reference engine.

Scoring is teacher-forced and **batch-invariant** by default: the log-probs of a response
depend on that response and its context only, never on the other rows of a call, their order,
the chunking of a run or the thread count (:mod:`prefsmith.models.invariance` says why and how):
each response runs in a forward pass of its own, with at least
:data:`~prefsmith.models.invariance.MIN_MATMUL_ROWS` rows per product and math-kernel attention.
No compute is spent on padding (the tiny set's 48 responses with SmolLM2-135M on an idle
2-core CPU: 26.7 s, against 31.8 s in padded batches). ``BatchingOptions(batch_invariant=False)``
restores right-padded, length-sorted batches (faster on a GPU; rewards then move in their last
digits with their neighbours).

Only the hidden states of positions that predict response tokens go through the output layer,
in memory-bounded chunks, and log-softmax is taken in float32 (float64 for float64 models). (If
the decoder-plus-output-layer path does not reproduce ``model.forward`` on a probe, full logits
from ``model.forward`` are used.)

A context of at least ``min_shared_prefix`` tokens runs once through the model and its
responses (chosen and rejected of a pair, the candidates of a prompt) are scored on its
key/value cache: the context costs one forward pass, not one per response. In the invariant mode
every such row takes this path, alone or not, so sharing never changes a number. The cache path
is used only if it reproduces an uncached forward on a probe.

Sampling uses prefsmith's seeded sampler (:class:`prefsmith.models.sampler.SeededSampler`):
every completion has its own ``torch.Generator`` seeded from :attr:`SampleRequest.seeds`, so the
samples do not depend on batch size, order or neighbours.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prefsmith.models.encoding import EncodedResponse
from prefsmith.models.engines.base import (
    Completion,
    Progress,
    SampleOptions,
    SampleRequest,
    finish_completion,
)
from prefsmith.models.invariance import MIN_MATMUL_ROWS, invariant_kernels
from prefsmith.models.loading import (
    LoadedModel,
    LoadOptions,
    ModelFiles,
    load_model,
    resolve_device,
    resolve_dtype,
    storage_dtype,
)


@functools.cache
def _cache_argument_of(forward: Any) -> str:
    parameters = inspect.signature(forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_argument(module: Any) -> str:
    """The name ``module.forward`` takes its key/value cache under: ``cache`` in recent
    transformers 5.x (``past_key_values`` is deprecated there), ``past_key_values`` before."""
    return _cache_argument_of(type(module).forward)


@dataclass(frozen=True)
class BatchingOptions:
    """How sequences are grouped into forward passes.

    Attributes:
        max_length: Longest sequence in tokens; longer rows are truncated (prompt first).
        max_batch_tokens: Budget of padded tokens per forward pass (batch size x longest row).
        max_batch_size: Upper bound on rows per forward pass.
        share_prefix: Run the context shared by several responses (chosen and rejected of a
            pair, the candidates of a prompt, a long customization context) once, and score
            the responses on its key/value cache instead of recomputing it for each.
        min_shared_prefix: Shortest context (tokens) scored on a key/value cache of its own;
            shorter ones run whole with their response. The cache path costs a copy of the
            cache per response: on the tiny set's contexts (about 30-60 tokens, SmolLM2-135M,
            idle) scoring each response whole took 26.7 s against 44.8 s on the cache, so
            only long contexts (customization exemplars, long conversations) take it.
        batch_invariant: Score each response in a forward pass of its own, so its log-probs do
            not depend on the other rows of a call (see the module docstring); the batch
            budget then does not apply. ``False``: right-padded, length-sorted batches of
            ``max_batch_tokens`` (faster on a GPU, not bit-reproducible across batchings).
    """

    max_length: int = 2048
    max_batch_tokens: int = 8192
    max_batch_size: int = 64
    share_prefix: bool = True
    min_shared_prefix: int = 256
    batch_invariant: bool = True


def shared_prefix_groups(
    contexts: Sequence[Sequence[int]], min_length: int = 1
) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """Group rows that share their whole context (the tokens before their responses).

    ``contexts[i]`` holds the tokens of row ``i`` that precede the position predicting its
    first response token. Rows with identical contexts form a group; groups of two or more rows
    whose context has at least ``min_length`` tokens are returned as ``(context_length, rows)``,
    every other row in the second list. (Rows of one prompt whose template re-tokenized the
    boundary differently end up in different groups: they are still scored, just not shared.)

    >>> shared_prefix_groups([[1, 2, 3], [1, 2, 3], [9], [1, 2, 3]], min_length=2)
    ([(3, [0, 1, 3])], [2])
    >>> shared_prefix_groups([[1, 2, 3], [1, 2, 3]], min_length=4)
    ([], [0, 1])
    """
    by_context: dict[tuple[int, ...], list[int]] = {}
    for index, context in enumerate(contexts):
        by_context.setdefault(tuple(context), []).append(index)
    groups, single = [], []
    for context, members in by_context.items():
        if len(members) >= 2 and len(context) >= min_length:
            groups.append((len(context), members))
        else:
            single.extend(members)
    return groups, sorted(single)


def plan_batches(lengths: Sequence[int], options: BatchingOptions) -> list[list[int]]:
    """Group row indices into length-sorted buckets within the token budget.

    Rows are sorted longest first, so every batch pads to the length of its first row.

    >>> plan_batches([5, 1, 4, 2], BatchingOptions(max_batch_tokens=10, max_batch_size=8))
    [[0, 2], [3, 1]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = lengths[current[0]] if current else lengths[index]
        fits = (len(current) + 1) * width <= options.max_batch_tokens
        if current and (not fits or len(current) >= options.max_batch_size):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


#: Memory allowed for one chunk of logits in the output layer.
HEAD_CHUNK_BYTES = 256 * 2**20


def _gather_logprobs(logits: Any, targets: Any) -> Any:
    """``log_softmax(logits)[targets]`` computed in float32 (or float64 for float64 models)."""
    import torch

    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    picked = logits.gather(-1, targets[:, None]).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


class HFEngine:
    """A ``transformers`` causal LM behind the :class:`~prefsmith.models.engines.base.Engine`
    interface; the weights load on first use (or pass ``loaded`` to reuse a model in memory).

    Attributes:
        kind: ``"hf"``.
        in_process: ``True``: the model is a ``transformers`` model in this process.
        name: The model name as given.
        load_options: dtype, device, threads.
        batching: Scoring batch plan and prefix sharing.
        tokenizer: The model's tokenizer (shared with the backend above, template included).
        fingerprint: Hash of the weights folder.
        dtype: Compute dtype name.
        max_positions: ``max_position_embeddings`` of the config, if any.
    """

    kind = "hf"
    in_process = True

    def __init__(
        self,
        name: str,
        load_options: LoadOptions | None = None,
        batching: BatchingOptions | None = None,
        loaded: LoadedModel | None = None,
    ) -> None:
        self.name = name
        self.load_options = load_options or LoadOptions()
        self.batching = batching or BatchingOptions()
        self._loaded = loaded
        self.max_positions: int | None
        device = resolve_device(self.load_options.device)
        if loaded is None:
            files = ModelFiles.of(name, storage_dtype(self.load_options.dtype, device))
            self.fingerprint, self.tokenizer = files.fingerprint, files.tokenizer
            self.max_positions = files.max_positions
        else:
            self.fingerprint, self.tokenizer = loaded.fingerprint, loaded.tokenizer
            self.max_positions = getattr(loaded.model.config, "max_position_embeddings", None)
        self.dtype = str(resolve_dtype(self.load_options.dtype, device)).removeprefix("torch.")
        self._head_path: bool | None = None
        self._prefix_path: bool | None = None

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, batching: BatchingOptions | None = None) -> HFEngine:
        """An engine over a model already in memory."""
        return cls(loaded.source.name, batching=batching, loaded=loaded)

    @classmethod
    def create(
        cls,
        name: str,
        load_options: LoadOptions | None = None,
        batching: BatchingOptions | None = None,
        options: Any = None,
    ) -> HFEngine:
        """See :meth:`~prefsmith.models.engines.base.Engine.create` (the hf engine has no
        options of its own: ``options`` is ignored)."""
        return cls(name, load_options, batching)

    @classmethod
    def parse_options(cls, text: str, spec: str) -> None:
        if text:
            raise ValueError(f"engine {spec!r}: the hf engine takes no options")

    @classmethod
    def check_installed(cls) -> None:
        """transformers is a dependency of prefsmith: always installed."""

    @property
    def max_sequence(self) -> int:
        """Longest row to score: ``batching.max_length``, capped by the model's positions."""
        return min(self.batching.max_length, self.max_positions or self.batching.max_length)

    @property
    def generation_config(self) -> Any:
        return self.model.generation_config

    @property
    def is_loaded(self) -> bool:
        """Whether the weights are in memory (they load on first use)."""
        return self._loaded is not None

    @property
    def loaded(self) -> LoadedModel:
        """The model and tokenizer, loaded on first access."""
        if self._loaded is None:
            self._loaded = load_model(self.name, self.load_options)
            self._loaded.tokenizer = self.tokenizer  # keep the template in use
        return self._loaded

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def release(self) -> None:
        """Drop the weights from memory (they load again on the next miss)."""
        self._loaded = None
        self._head_path = None
        self._prefix_path = None

    # ---------------------------------------------------------------------------------------
    # Scoring

    def score_tokens(
        self, rows: Sequence[EncodedResponse], on_progress: Progress = None
    ) -> list[np.ndarray]:
        results: list[np.ndarray | None] = [None] * len(rows)

        def done(batch: list[int], logprobs: list[np.ndarray]) -> None:
            for i, lp in zip(batch, logprobs, strict=True):
                results[i] = lp
            if on_progress:
                on_progress(len(batch))

        if self.batching.batch_invariant:
            self._score_one_by_one(rows, done)
            return [r for r in results if r is not None]
        groups, single = self._plan_sharing(rows)
        for prefix_length, members in groups:
            prefix = rows[members[0]].input_ids[:prefix_length]
            cache = self._prefill(prefix)
            suffixes = [len(rows[i].input_ids) - prefix_length for i in members]
            for part in plan_batches(suffixes, self.batching):
                batch = [members[k] for k in part]
                done(batch, self._forward([rows[i] for i in batch], prefix_length, cache))
        lengths = [len(rows[i].input_ids) for i in single]
        for part in plan_batches(lengths, self.batching):
            batch = [single[k] for k in part]
            done(batch, self._forward([rows[i] for i in batch]))
        return [r for r in results if r is not None]

    def _score_one_by_one(self, rows: Sequence[EncodedResponse], done: Any) -> None:
        """Each row in a forward pass of its own; rows with a context of at least
        ``min_shared_prefix`` tokens on that context's cache (computed once per context)."""
        min_context = max(self.batching.min_shared_prefix, MIN_MATMUL_ROWS)
        by_context: dict[tuple[int, ...], list[int]] = {}
        whole: list[int] = []
        for index, row in enumerate(rows):
            context = tuple(row.input_ids[: row.response_start - 1])
            if self.batching.share_prefix and len(context) >= min_context:
                by_context.setdefault(context, []).append(index)
            else:
                whole.append(index)
        if by_context and self._prefix_path is None:
            self._prefix_path = self._check_prefix_path()
        if not self._prefix_path:
            whole = sorted(whole + [i for members in by_context.values() for i in members])
            by_context = {}
        for context, members in by_context.items():
            cache = self._prefill(context)
            for index in members:
                done([index], self._forward([rows[index]], len(context), cache))
        for index in whole:
            done([index], self._forward([rows[index]]))

    def _plan_sharing(
        self, encoded: Sequence[EncodedResponse]
    ) -> tuple[list[tuple[int, list[int]]], list[int]]:
        """Groups of rows scored on a shared context cache, and the rows scored on their own."""
        everything = list(range(len(encoded)))
        if not self.batching.share_prefix or len(encoded) < 2:
            return [], everything
        contexts = [e.input_ids[: e.response_start - 1] for e in encoded]
        groups, single = shared_prefix_groups(contexts, max(1, self.batching.min_shared_prefix))
        if groups and self._prefix_path is None:
            self._prefix_path = self._check_prefix_path()
        return (groups, single) if self._prefix_path else ([], everything)

    def _prefill(self, prefix: Sequence[int]) -> Any:
        """Key/value cache of ``prefix`` (one row)."""
        import torch
        from transformers import DynamicCache

        ids = torch.tensor([list(prefix)], device=self.device)
        cache = DynamicCache(config=self.model.config)
        with invariant_kernels(self.batching.batch_invariant):
            module = self._decoder_or_model()
            module(input_ids=ids, use_cache=True, **{cache_argument(module): cache})
        return cache

    def _decoder_or_model(self) -> Any:
        if self._head_path is None:
            self._head_path = self._check_head_path()
        return self._decoder if self._head_path else self.model

    def _forward(
        self, rows: list[EncodedResponse], prefix_length: int = 0, cache: Any = None
    ) -> list[np.ndarray]:
        """Log-probs of the response tokens of ``rows``.

        With ``cache`` (from :meth:`_prefill`), the first ``prefix_length`` tokens of every row
        are that cache's tokens and only the rest of each row runs through the model.
        """
        import torch

        model = self._decoder_or_model()
        width = max(max(len(r.input_ids) for r in rows) - prefix_length, MIN_MATMUL_ROWS)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), prefix_length + width), dtype=torch.long)
        mask[:, :prefix_length] = 1
        for b, row in enumerate(rows):
            suffix = row.input_ids[prefix_length:]
            ids[b, : len(suffix)] = torch.tensor(suffix)
            mask[b, prefix_length : prefix_length + len(suffix)] = 1
        # Position p predicts token p + 1: gather (row, position) of every response token.
        batch_index, positions, sizes = [], [], []
        for b, row in enumerate(rows):
            span = torch.arange(row.response_start - 1, len(row.input_ids) - 1) - prefix_length
            batch_index.append(torch.full_like(span, b))
            positions.append(span)
            sizes.append(len(span))
        rows_ix, pos_ix = torch.cat(batch_index), torch.cat(positions)
        targets = ids[rows_ix, pos_ix + 1].to(self.device)
        rows_ix, pos_ix = rows_ix.to(self.device), pos_ix.to(self.device)
        inputs: dict[str, Any] = {
            "input_ids": ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "use_cache": cache is not None,
        }
        if cache is not None:
            copied = copy.deepcopy(cache)
            copied.batch_repeat_interleave(len(rows))
            inputs[cache_argument(model)] = copied
        with invariant_kernels(self.batching.batch_invariant):
            if self._head_path:
                hidden = model(**inputs).last_hidden_state[rows_ix, pos_ix]
                logprobs = self._head_logprobs(hidden, targets)
            else:
                logits = model(**inputs).logits[rows_ix, pos_ix]
                logprobs = _gather_logprobs(logits, targets)
        return [t.numpy() for t in logprobs.double().cpu().split(sizes)]

    def _head_logprobs(self, hidden: Any, targets: Any) -> Any:
        """Output layer + log-softmax over selected positions, in chunks bounded in memory."""
        import torch

        logit_bytes = max(4, hidden.element_size())  # log-softmax runs in float32 or wider
        chunk = max(MIN_MATMUL_ROWS, HEAD_CHUNK_BYTES // (logit_bytes * self._vocab_size))
        parts = []
        for i in range(0, hidden.shape[0], chunk):
            part, n = hidden[i : i + chunk], min(chunk, hidden.shape[0] - i)
            if n < MIN_MATMUL_ROWS:  # padded with zero rows, dropped after the product
                part = torch.cat([part, part.new_zeros(MIN_MATMUL_ROWS - n, part.shape[1])])
            parts.append(_gather_logprobs(self._head_logits(part)[:n], targets[i : i + n]))
        return torch.cat(parts) if parts else hidden.new_zeros(0)

    def _head_logits(self, hidden: Any) -> Any:
        """What ``model.forward`` does after the decoder: output layer and known rescalings."""
        import torch

        logits = self.model.get_output_embeddings()(hidden)
        config = self.model.config
        if getattr(config, "logit_scale", None):  # Cohere
            logits = logits * config.logit_scale
        if getattr(config, "logits_scaling", None):  # Granite
            logits = logits / config.logits_scaling
        if getattr(config, "final_logit_softcapping", None):  # Gemma 2/3
            cap = config.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _check_head_path(self) -> bool:
        """Use decoder + own output layer only if it reproduces ``model.forward`` exactly."""
        import torch

        try:
            self._decoder = self.model.get_decoder()
            self._vocab_size = self.model.get_output_embeddings().weight.shape[0]
            probe = torch.arange(1, 9, device=self.device)[None, :] % self._vocab_size
            with torch.inference_mode():
                want = self.model(input_ids=probe, use_cache=False).logits
                hidden = self._decoder(input_ids=probe, use_cache=False).last_hidden_state
                got = self._head_logits(hidden)
            return bool(torch.allclose(want.float(), got.float(), atol=1e-4, rtol=1e-4))
        except (AttributeError, TypeError, NotImplementedError):
            return False

    def _check_prefix_path(self) -> bool:
        """Use context caches only if they reproduce an uncached forward on a probe.

        A model whose attention is not causal (e.g. bidirectional), or whose cache does not
        support continuing a batch, fails the probe and is scored without sharing.
        """
        import torch

        weights = self.model.get_input_embeddings().weight
        probe = EncodedResponse(tuple(i % weights.shape[0] for i in range(1, 13)), response_start=5)
        # Rounding differs between the two paths; a wrong cache differs by far more.
        tolerance = max(1e-4, 8 * torch.finfo(weights.dtype).eps)
        try:
            want = self._forward([probe])[0]
            got = self._forward([probe, probe], 3, self._prefill(probe.input_ids[:3]))
            return all(np.allclose(g, want, atol=tolerance, rtol=tolerance) for g in got)
        except (AttributeError, TypeError, ValueError, NotImplementedError, RuntimeError):
            return False

    # ---------------------------------------------------------------------------------------
    # Sampling

    #: Sample with prefsmith's own decode loop (one prefill per distinct prompt, finished rows
    #: dropped from the batch); ``False`` uses ``transformers``' ``generate`` for every row.
    shared_prefill: bool = True

    def sample(
        self,
        requests: Sequence[SampleRequest],
        options: SampleOptions,
        on_progress: Progress = None,
    ) -> list[list[Completion]]:
        """Seeded, batch-invariant sampling.

        Jobs (request, completion) are sorted longest prompt first and generated
        ``options.batch_size`` at a time, left-padded, each with its own generator. With
        :attr:`shared_prefill` (the default, when the model's cache passes the probe of
        :meth:`_check_prefix_path`), each distinct prompt of a batch is prefilled once and its
        key/value cache copied to its completions, and rows that finished leave the batch;
        otherwise ``transformers``' ``generate`` runs every row to the end.
        """
        jobs = [(r, j) for r in range(len(requests)) for j in range(requests[r].n)]
        jobs.sort(key=lambda job: -len(requests[job[0]].prompt_ids))
        results: list[list[Completion | None]] = [[None] * r.n for r in requests]
        if self.shared_prefill and self._prefix_path is None:
            self._prefix_path = self._check_prefix_path()
        run = self._sample_shared if self.shared_prefill and self._prefix_path else self._generate
        for first in range(0, len(jobs), options.batch_size):
            batch = jobs[first : first + options.batch_size]
            prompts = [requests[r].prompt_ids for r, _ in batch]
            seeds = [requests[r].seeds[j] for r, j in batch]
            for (r, j), completion in zip(batch, run(prompts, seeds, options), strict=True):
                results[r][j] = completion
            if on_progress:
                on_progress(len(batch))
        return [[c for c in per if c is not None] for per in results]

    def _pad_id(self, options: SampleOptions) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else options.stop_ids[0]

    def _generators(self, seeds: Sequence[int]) -> list[Any]:
        import torch

        generators = []
        for seed in seeds:
            g = torch.Generator()
            g.manual_seed(seed)
            generators.append(g)
        return generators

    def _keeps_last_logits(self) -> bool:
        """Whether the model's forward takes ``logits_to_keep`` (output layer on one position)."""
        import inspect

        return "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def _generate(
        self, prompts: Sequence[Sequence[int]], seeds: Sequence[int], options: SampleOptions
    ) -> list[Completion]:
        """One batch through ``transformers``' ``generate`` with the seeded sampler."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        from prefsmith.models.sampler import SeededSampler

        stops = list(options.stop_ids)
        pad_id = self._pad_id(options)
        generation_config = GenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=options.max_new_tokens,
            eos_token_id=stops,
            pad_token_id=pad_id,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
        )
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        sampler = SeededSampler(
            self._generators(seeds),
            options.temperature,
            options.top_p,
            record_logprobs=options.logprobs,
        )
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                generation_config=generation_config,
                logits_processor=LogitsProcessorList([sampler]),
            )
        new_tokens = out[:, width:].cpu().tolist()
        recorded = sampler.recorded_logprobs()
        return [
            finish_completion(
                self.tokenizer, new_tokens[row], stops, None if recorded is None else recorded[row]
            )
            for row in range(len(prompts))
        ]

    def _sample_shared(
        self, prompts: Sequence[Sequence[int]], seeds: Sequence[int], options: SampleOptions
    ) -> list[Completion]:
        """One batch with a prefill per distinct prompt and a plain decode loop.

        The distinct prompts are left-padded to one width and run once; their caches and
        last-position logits are copied to the rows that sample from them. Each step samples
        every active row with its own generator (:class:`SeededSampler`), feeds the chosen
        tokens back, and drops rows that produced a stop token, so a row's tokens depend only on
        its prompt and seed (up to floating-point rounding of batches of other shapes).
        """
        import torch
        from transformers import DynamicCache

        from prefsmith.models.sampler import SeededSampler

        device, stops = self.device, set(options.stop_ids)
        distinct: dict[tuple[int, ...], int] = {}
        owner = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
        unique = list(distinct)
        width = max(len(p) for p in unique)
        ids = torch.full((len(unique), width), self._pad_id(options), dtype=torch.long)
        mask = torch.zeros((len(unique), width), dtype=torch.long)
        for row, prompt in enumerate(unique):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate does
        cache = DynamicCache(config=self.model.config)
        extra = {"logits_to_keep": 1} if self._keeps_last_logits() else {}
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                use_cache=True,
                **{cache_argument(self.model): cache},
                **extra,
            )
            index = torch.tensor(owner, device=device)
            logits = out.logits[:, -1, :].float()[index]
            cache.batch_select_indices(index)
        mask = mask[owner].to(device)
        next_position = positions[owner, -1].to(device) + 1
        generators = self._generators(seeds)
        active = list(range(len(prompts)))
        tokens: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        for step in range(options.max_new_tokens):
            sampler = SeededSampler(
                [generators[i] for i in active],
                options.temperature,
                options.top_p,
                record_logprobs=options.logprobs,
            )
            chosen = sampler(None, logits).argmax(dim=-1)
            recorded = sampler.recorded_logprobs()
            keep = []
            for k, (row, token) in enumerate(zip(active, chosen.tolist(), strict=True)):
                tokens[row].append(token)
                if recorded is not None:
                    logprobs[row].append(recorded[k][0])
                if token not in stops:
                    keep.append(k)
            if not keep or step == options.max_new_tokens - 1:
                break
            with torch.inference_mode():
                if len(keep) < len(active):
                    kept = torch.tensor(keep, device=device)
                    cache.batch_select_indices(kept)
                    mask, next_position, chosen = mask[kept], next_position[kept], chosen[kept]
                    active = [active[k] for k in keep]
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
                out = self.model(
                    input_ids=chosen[:, None],
                    attention_mask=mask,
                    position_ids=next_position[:, None],
                    use_cache=True,
                    **{cache_argument(self.model): cache},
                )
                logits = out.logits[:, -1, :].float()
                next_position = next_position + 1
        return [
            finish_completion(
                self.tokenizer,
                tokens[row],
                options.stop_ids,
                logprobs[row] if options.logprobs else None,
            )
            for row in range(len(prompts))
        ]
