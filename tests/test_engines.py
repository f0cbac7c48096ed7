"""The engine interface (token ids in, log-probs or completions out) with the hf engine.

These run everywhere; the vLLM engine's own tests are in ``test_vllm.py``.
"""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from prefsmith.generation.sampling import (
    SamplingConfig,
    generate,
    prompt_ids,
    sample_seed,
    stop_token_ids,
)
from prefsmith.models.backend import (
    BatchingOptions,
    EngineBackend,
    ScoreRequest,
    TransformersBackend,
    load_backend,
)
from prefsmith.models.encoding import EncodedResponse
from prefsmith.models.engines import (
    Completion,
    EngineNotInstalledError,
    SampleOptions,
    SampleRequest,
    finish_completion,
    load_engine,
)
from prefsmith.models.engines.hf import HFEngine

REQUESTS = [
    ScoreRequest(({"role": "user", "content": "Say hi."},), "Hi there!"),
    ScoreRequest(({"role": "user", "content": "Say hi."},), "Hello, friend. How are you?"),
    ScoreRequest(
        ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}), "4"
    ),
    ScoreRequest(({"role": "user", "content": "Count to five " * 8},), "One, two, three, four."),
    ScoreRequest(({"role": "user", "content": "Count to five " * 8},), "1 2 3 4 5"),
]

CONVS = [[{"role": "user", "content": text}] for text in ("Hi!", "Tell me a story.", "2+2?")]


def reference(model, row: EncodedResponse) -> np.ndarray:
    """One row, no padding, no cache, full logits, float64 log-softmax; attention on the math
    kernel like the engine's (see ``reference_logprobs`` in test_backend.py)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        logits = model(torch.tensor([row.input_ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(row.input_ids[row.response_start :])
    return logp[row.response_start - 1 : -1].gather(-1, targets[:, None]).squeeze(-1).numpy()


@pytest.mark.parametrize("name", ["chatml-a", "plain-c"])
def test_hf_engine_scores_token_rows_like_the_backend(tiny_backends, name):
    backend = tiny_backends[name]
    rows = [backend.encode(r) for r in REQUESTS]
    engine = HFEngine.from_loaded(backend.loaded)
    seen: list[int] = []
    got = engine.score_tokens(rows, seen.append)
    assert sum(seen) == len(rows)
    # The backend is the engine plus the encoder: bit-identical numbers.
    for lp, result, row in zip(got, backend.score(REQUESTS), rows, strict=True):
        assert lp.dtype == np.float64
        assert np.array_equal(lp, result.logprobs)
        assert result.token_ids == row.input_ids[row.response_start :]
        np.testing.assert_allclose(lp, reference(backend.model, row), atol=1e-4)


def test_hf_engine_shares_prefixes_and_is_batch_invariant(tiny_backends):
    backend = tiny_backends["chatml-a"]
    rows = [backend.encode(r) for r in REQUESTS]
    shared = HFEngine.from_loaded(backend.loaded, BatchingOptions(min_shared_prefix=4))
    assert shared._plan_sharing(rows)[0]  # the two pairs share their contexts
    plain = HFEngine.from_loaded(
        backend.loaded, BatchingOptions(share_prefix=False, max_batch_size=1)
    )
    for a, b in zip(shared.score_tokens(rows), plain.score_tokens(rows[::-1])[::-1], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_backend_keeps_its_public_surface(tiny_models, tiny_backends):
    backend = load_backend(tiny_models["chatml-a"])
    assert isinstance(backend, TransformersBackend) and isinstance(backend, EngineBackend)
    assert backend.engine_kind == "hf" and backend.engine.kind == "hf"
    assert backend.dtype == "float32" and backend.encoder.max_length == 1024
    same = load_backend(tiny_models["chatml-a"], engine="hf")
    assert same.fingerprint == backend.fingerprint
    assert same.tokenizer_fingerprint == tiny_backends["chatml-a"].tokenizer_fingerprint
    with pytest.raises(ValueError, match="engine must be one of hf, vllm"):
        load_backend(tiny_models["chatml-a"], engine="tgi")
    with pytest.raises(ValueError, match="engine must be one of hf, vllm"):
        load_engine(tiny_models["chatml-a"], "tgi")


def test_generate_through_the_engine_equals_generate_on_the_model(tiny_backends):
    loaded = tiny_backends["chatml-a"].loaded
    config = SamplingConfig(n=3, max_new_tokens=6, batch_size=4)
    via_model = generate(loaded, CONVS, config)
    via_engine = generate(HFEngine.from_loaded(loaded), CONVS, config)
    assert via_engine == via_model
    assert [len(p) for p in via_model] == [3, 3, 3]


def test_engine_sampling_is_seeded_per_completion(tiny_backends):
    loaded = tiny_backends["chatml-a"].loaded
    engine = HFEngine.from_loaded(loaded)
    tok = engine.tokenizer
    stops = tuple(stop_token_ids(tok, loaded.model))
    requests = [
        SampleRequest(tuple(prompt_ids(tok, c)), tuple(sample_seed(0, c, j) for j in range(3)))
        for c in CONVS
    ]
    options = SampleOptions(max_new_tokens=6, stop_ids=stops, top_p=0.85, logprobs=True)
    seen: list[int] = []
    out = engine.sample(requests, options, seen.append)
    assert sum(seen) == 9
    for per in out:
        assert len(per) == 3
        for c in per:
            assert isinstance(c, Completion) and 1 <= c.n_tokens <= 6
            assert c.finish_reason in ("stop", "length")
            assert c.logprobs is not None and c.logprobs.shape == (c.n_tokens,)
            assert (c.logprobs <= 0).all()
    # One completion alone, in another batch, with one seed: the same tokens.
    alone = engine.sample(
        [SampleRequest(requests[1].prompt_ids, requests[1].seeds[2:])],
        SampleOptions(max_new_tokens=6, stop_ids=stops, top_p=0.85, batch_size=1),
    )
    assert alone[0][0].token_ids == out[1][2].token_ids
    assert alone[0][0].logprobs is None


def test_engine_logprobs_of_samples_match_teacher_forced_scores(tiny_backends):
    backend = tiny_backends["chatml-a"]
    engine = HFEngine.from_loaded(backend.loaded)
    ids = tuple(prompt_ids(engine.tokenizer, CONVS[1]))
    stops = tuple(stop_token_ids(engine.tokenizer, backend.model))
    options = SampleOptions(max_new_tokens=8, stop_ids=stops, temperature=1.0, logprobs=True)
    (completion,) = engine.sample([SampleRequest(ids, (7,))], options)[0]
    row = EncodedResponse(ids + completion.token_ids, len(ids))
    (scored,) = engine.score_tokens([row])
    np.testing.assert_allclose(completion.logprobs, scored, atol=1e-4)


def test_finish_completion_cuts_after_the_first_stop(smol_tokenizer):
    stop = smol_tokenizer.convert_tokens_to_ids("<|im_end|>")
    hello = smol_tokenizer("Hello", add_special_tokens=False)["input_ids"]
    c = finish_completion(smol_tokenizer, [*hello, stop, *hello], [stop], [-1.0] * 10)
    assert (c.text, c.finish_reason, c.token_ids) == ("Hello", "stop", (*hello, stop))
    assert c.n_tokens == len(hello) + 1 and c.logprobs.shape == (c.n_tokens,)
    c = finish_completion(smol_tokenizer, hello, [stop])
    assert (c.text, c.finish_reason, c.n_tokens) == ("Hello", "length", len(hello))
    assert c.logprobs is None


def test_sample_request_and_options_validate():
    assert SampleRequest.consecutive([1, 2], 2, 5) == SampleRequest((1, 2), (5, 6))
    assert SampleRequest((1,), (3, 4, 5)).n == 3
    with pytest.raises(ValueError, match="top_p"):
        SampleOptions(max_new_tokens=4, stop_ids=(1,), top_p=0)
    with pytest.raises(ValueError, match="stop_ids"):
        SampleOptions(max_new_tokens=4, stop_ids=())
    with pytest.raises(ValueError, match="max_new_tokens"):
        SampleOptions(max_new_tokens=0, stop_ids=(1,))


def test_vllm_options_validate_without_vllm():
    from prefsmith.models.engines.vllm import VLLMOptions

    assert VLLMOptions().tensor_parallel_size == 1
    with pytest.raises(ValueError, match="use the hf engine for float64"):
        VLLMOptions(dtype="float64")
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VLLMOptions(gpu_memory_utilization=1.5)


def test_missing_vllm_names_the_extra(monkeypatch, tiny_models):
    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ModuleNotFoundError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(EngineNotInstalledError, match=r'pip install "prefsmith\[vllm\]"'):
        load_backend(tiny_models["chatml-a"], engine="vllm")
    with pytest.raises(ImportError, match=r"prefsmith\[vllm\]"):
        load_engine(tiny_models["chatml-a"], "vllm")


def test_the_policy_engine_is_recorded_and_hf_settings_are_unchanged(monkeypatch, tiny_models):
    from prefsmith.generation.sampling import generator_settings
    from prefsmith.models.engines import as_engine
    from prefsmith.models.engines import vllm as vllm_engine

    config = SamplingConfig(n=2, max_new_tokens=4)
    hf = as_engine(tiny_models["chatml-a"])
    assert hf.kind == "hf" and "engine" not in generator_settings(hf, config)
    assert as_engine(hf) is hf and not hf.is_loaded  # settings load no weights
    in_memory = as_engine(hf.loaded)  # a model in memory samples with the hf engine
    assert isinstance(in_memory, HFEngine) and in_memory.loaded is hf.loaded
    assert generator_settings(in_memory, config) == generator_settings(hf, config)
    # A vllm engine holds no vllm.LLM until it samples: build one without vLLM installed.
    monkeypatch.setattr(vllm_engine, "import_vllm", lambda: None)
    monkeypatch.setattr(vllm_engine.VLLMEngine, "_on_cpu", lambda self: True)
    vllm = load_engine(tiny_models["chatml-a"], "vllm")
    settings = generator_settings(vllm, config)
    assert settings["engine"] == "vllm"  # a resumed run cannot mix the two engines' samples
    assert {k: v for k, v in settings.items() if k != "engine"} == generator_settings(hf, config)


@pytest.mark.parametrize("command", ["sample", "rmboost", "rlcd"])
def test_sampling_commands_name_the_vllm_extra(monkeypatch, tmp_path, tiny_models, command):
    from typer.testing import CliRunner

    from prefsmith.cli.main import app

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ModuleNotFoundError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Say hi."}\n')
    monkeypatch.setattr(builtins, "__import__", no_vllm)
    args = [command, str(prompts), "-o", str(tmp_path / "out.jsonl"), "--engine", "vllm"]
    result = CliRunner().invoke(app, [*args, "-m", tiny_models["chatml-a"], "--no-progress"])
    assert result.exit_code == 2, result.output
    assert 'pip install "prefsmith[vllm]"' in " ".join(result.output.split())
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        ("vllm:tp=8", "unknown vllm option 'tp'; choose from dtype, gpu_memory_utilization"),
        ("vllm:tensor_parallel_size", "write options as KEY=VALUE"),
        ("hf:dtype=float32", "the hf engine takes no options"),
        ("ray", "engine must be one of hf, vllm"),
    ],
)
def test_bad_engine_specs_are_refused_before_any_row_is_read(tmp_path, engine, message):
    from typer.testing import CliRunner

    from prefsmith.cli.main import app

    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["score", "-o", str(out), "--engine", engine])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists()


@pytest.mark.vllm
def test_vllm_options_reach_the_engine_from_the_command_line_spec(tiny_models):
    """``--engine vllm:KEY=VALUE`` becomes the VLLMOptions of every model of the command."""
    from prefsmith.cli.stages import build_settings, options_of, settings_from
    from prefsmith.models.engines import parse_engine
    from prefsmith.stages import STAGES, StageContext

    pytest.importorskip("vllm", reason="vLLM is not installed: pip install 'prefsmith[vllm]'")
    spec = "vllm:tensor_parallel_size=2,gpu_memory_utilization=0.45,enforce_eager=true"
    kind = STAGES["sample"]  # the options of `prefsmith sample --engine SPEC -m MODEL`
    values = {"engine": spec, "model": tiny_models["chatml-a"]}
    config, options, run = build_settings(kind, settings_from(kind, options_of(kind), values))
    policy = StageContext("out.jsonl", options, run).policy(config.model)
    expected = parse_engine(spec)[1]
    assert options.engine == "vllm" and options.vllm_options == expected
    assert policy.kind == "vllm" and policy.options == expected
    assert expected.tensor_parallel_size == 2 and expected.enforce_eager is True


def test_one_registry_names_the_engines_and_builds_their_backends(tiny_models):
    from prefsmith.models.backend import backend_of
    from prefsmith.models.engines import ENGINES, engine_class

    assert list(ENGINES) == ["hf", "vllm"] and engine_class("hf") is HFEngine
    assert engine_class("hf").in_process and not engine_class("vllm").in_process
    engine = load_engine(tiny_models["chatml-a"], "hf")
    assert isinstance(backend_of(engine), TransformersBackend)
    assert engine.max_sequence == min(engine.batching.max_length, engine.max_positions)
