"""CPU facts, the slow-dtype warning, and the load check that benchmarks run before timing."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

from prefsmith.models import hardware
from prefsmith.models.hardware import SlowDtypeWarning, cpu_facts, parse_cpuinfo
from prefsmith.models.loading import resolve_dtype

#: /proc/cpuinfo heads of the two kinds of EPYC machines (flags trimmed to the relevant ones).
AVX2_ONLY = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse4_2 fma f16c avx avx2

processor\t: 1
model name\t: AMD EPYC 7B12
"""
AVX512_BF16 = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fma avx avx2 avx512f avx512bw avx512dq avx512vl avx512_bf16
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes asimdhp bf16 i8mm sve
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


def facts_of(text: str, machine: str = "x86_64") -> dict:
    """What :func:`cpu_facts` says on a machine whose /proc/cpuinfo reads ``text``."""
    cpu = parse_cpuinfo(text)
    native = hardware.native_support(cpu["flags"], machine)
    return {
        "machine": machine,
        "model": cpu["model"],
        "flags": [f for f in hardware.RELEVANT_FLAGS if f in cpu["flags"]],
        "cores": 2,
        "native_bf16": native["bfloat16"],
        "native_fp16": native["float16"],
    }


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to run on the CPU of a /proc/cpuinfo text; warnings may fire again."""
    monkeypatch.setattr(hardware, "_warned", set())

    def use(text: str, machine: str = "x86_64") -> None:
        monkeypatch.setattr(hardware, "cpu_facts", lambda: facts_of(text, machine))

    return use


def slow_dtype_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, SlowDtypeWarning)]


def test_cpuinfo_of_each_kind():
    avx2 = facts_of(AVX2_ONLY)
    assert avx2["model"] == "AMD EPYC 7B12" and avx2["native_bf16"] is False
    assert "avx2" in avx2["flags"] and "avx512f" not in avx2["flags"]
    assert facts_of(AVX512_BF16)["native_bf16"] is True
    arm = facts_of(GRAVITON, "aarch64")
    assert arm["native_bf16"] is True and arm["native_fp16"] is True


def test_cpu_facts_of_this_machine():
    import torch

    facts = cpu_facts()
    assert facts["cores"] >= 1 and facts["torch"] == torch.__version__
    assert facts["torch_threads"] == torch.get_num_threads()
    assert facts["native_bf16"] in (True, False, None)
    if Path("/proc/cpuinfo").exists() and facts["machine"] == "x86_64":
        flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text())["flags"]
        assert facts["native_bf16"] == ("avx512_bf16" in flags or "amx_bf16" in flags)
    versions = hardware.package_versions()
    assert versions["torch"] == torch.__version__ and versions["prefsmith"]


def test_no_native_bf16_warns_once_with_reason_and_figure(cpu):
    import torch

    cpu(AVX2_ONLY)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16
        resolve_dtype("bfloat16", "cpu")  # a second model of the same run: no second warning
    assert slow_dtype_warnings(record) == [
        "this CPU (AMD EPYC 7B12) has no native bfloat16 (no avx512_bf16/amx_bf16): bfloat16"
        " matmuls run ~100x slower than float32 here; use --dtype float32"
    ]


def test_avx512_without_bf16_says_emulated(cpu):
    cpu(AVX512_BF16.replace(" avx512_bf16", "").replace("9B14", "7R13"))
    with pytest.warns(SlowDtypeWarning, match="emulated with AVX512"):
        resolve_dtype("bfloat16", "cpu")


def test_float16_without_native_support_warns(cpu):
    cpu(AVX512_BF16)
    with pytest.warns(SlowDtypeWarning, match=r"no native float16 \(no avx512_fp16/amx_fp16\)"):
        resolve_dtype("float16", "cpu")


@pytest.mark.parametrize(
    ("text", "dtype", "device"),
    [
        (AVX512_BF16, "bfloat16", "cpu"),  # native bf16
        (GRAVITON, "bfloat16", "cpu"),
        (AVX2_ONLY, "bfloat16", "cuda"),  # the GPU runs it
        (AVX2_ONLY, "auto", "cpu"),  # float32
        (AVX2_ONLY, "float32", "cpu"),
        ("", "bfloat16", "cpu"),  # flags unknown: no guess
    ],
)
def test_no_warning_where_the_dtype_is_fine(cpu, text, dtype, device):
    cpu(text, "aarch64" if text is GRAVITON else "x86_64")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        resolve_dtype(dtype, device)
    assert slow_dtype_warnings(record) == []


def test_training_resolves_dtypes_the_same_way(cpu, tiny_models):
    from prefsmith.training.config import TrainConfig

    cpu(AVX2_ONLY)
    config = TrainConfig(data="unused.jsonl", model=tiny_models["chatml-a"], dtype="bfloat16")
    with pytest.warns(SlowDtypeWarning, match="no native bfloat16"):
        model = config.load_base().model
    import torch

    assert next(model.parameters()).dtype is torch.bfloat16


def test_load_status_flags_a_loaded_machine(monkeypatch):
    monkeypatch.setattr(hardware.os, "getloadavg", lambda: (6.3, 5.0, 4.0))
    status = hardware.load_status(cores=2)
    assert status == {"load_1m": 6.3, "cores": 2, "loaded": True}
    assert hardware.load_note(status) == "LOADED: load 6.3 > 2 cores; figures not comparable"
    monkeypatch.setattr(hardware.os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    assert hardware.load_status(cores=2)["loaded"] is False
    assert hardware.load_note(hardware.load_status(cores=2)) == ""

    def no_load():
        raise OSError("no load average here")

    monkeypatch.setattr(hardware.os, "getloadavg", no_load)
    assert hardware.load_status(cores=2) == {"load_1m": None, "cores": 2, "loaded": None}


@pytest.fixture
def machine_helper(monkeypatch):
    """``benchmarks/_machine.py``, imported as the benchmark scripts import it."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sys.modules.pop("_machine", None)
    import _machine

    return _machine


def test_benchmark_load_log_records_and_flags(machine_helper, monkeypatch, capsys):
    loads = iter([0.5, 6.3])
    monkeypatch.setattr(hardware.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    monkeypatch.setattr(hardware, "cpu_count", lambda: 2)
    log = machine_helper.LoadLog()
    assert log.check("engine")["loaded"] is False and log.note() == ""
    assert log.check("straightforward")["loaded"] is True
    assert "straightforward: LOADED: load 6.3 > 2 cores" in capsys.readouterr().out
    assert log.note() == "LOADED: load 6.3 > 2 cores; figures not comparable"
    record = log.record()
    assert record["loaded"] is True
    assert [t["task"] for t in record["load_before"]] == ["engine", "straightforward"]
    assert record["machine"]["cpu"]["cores"] >= 1 and "torch" in record["machine"]["packages"]
    assert machine_helper.header().startswith("CPU: ")


def test_cli_shows_the_warning_as_one_line(cpu, tiny_models, tmp_path):
    from typer.testing import CliRunner

    from conftest import TINY_SET
    from prefsmith.cli.main import app

    cpu(AVX2_ONLY)
    args = ["score", str(TINY_SET), "-o", str(tmp_path / "o.jsonl"), "--limit", "2"]
    args += ["--strong", tiny_models["chatml-a"], "--weak", tiny_models["chatml-b"]]
    args += ["--dtype", "bfloat16", "--device", "cpu", "--no-progress", "--no-report"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "native bfloat16" in line]
    assert lines == [
        "warning: this CPU (AMD EPYC 7B12) has no native bfloat16 (no avx512_bf16/amx_bf16):"
        " bfloat16 matmuls run ~100x slower than float32 here; use --dtype float32"
    ]
    assert "SlowDtypeWarning" not in result.output and "warnings.warn" not in result.output
