"""What this machine's CPU can do, and whether it is busy: facts recorded next to timings.

CPUs of one kind differ where it matters for dtypes. On x86, bfloat16 matmuls are native with
AVX512-BF16 or AMX (``avx512_bf16``, ``amx_bf16`` in ``/proc/cpuinfo``); on a CPU with AVX2
only, torch falls back to its generic kernels, and a 512x512 bfloat16 matmul took 336 ms against
3.5 ms in float32 (AMD EPYC, torch 2.13.0+cpu, one thread): ~100x slower. With AVX512 but
without AVX512-BF16, torch emulates bfloat16 (oneDNN) and it is not expected to beat float32.
float16 is native with AVX512-FP16 or AMX-FP16 only; without them a float16 matmul took 20-50x
the float32 time on an AVX512-BF16 EPYC (146 ms against 3.2 ms, 512x512, one thread, median of
5, the machine loaded). :func:`slow_dtype_reason` says so for one dtype;
:func:`~prefsmith.models.loading.resolve_dtype` warns with it (:class:`SlowDtypeWarning`).

Benchmarks record :func:`cpu_facts`, :func:`package_versions` and :func:`load_status` before
each timed task: a figure measured while the 1-minute load average exceeds the core count says
more about the other processes than about the code.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
import warnings
from importlib import metadata
from typing import Any

#: CPU flags recorded in :func:`cpu_facts` (x86 names from /proc/cpuinfo; aarch64 features).
RELEVANT_FLAGS = (
    "sse4_2",
    "fma",
    "f16c",
    "avx",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
    "asimd",
    "asimdhp",
    "fphp",
    "bf16",
    "i8mm",
    "sve",
    "sve2",
    "svebf16",
)

#: Packages whose versions :func:`package_versions` records.
PACKAGES = ("prefsmith", "torch", "transformers", "numpy", "vllm")

#: Slow-down of a matmul in each dtype against float32 on a CPU without native support.
SLOWDOWN = {"bfloat16": "~100x", "float16": "~20-50x"}


class SlowDtypeWarning(UserWarning):
    """A dtype was asked for that this CPU runs far slower than float32."""


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model name and flags from the text of ``/proc/cpuinfo`` (first processor only).

    x86 lists ``flags``; aarch64 lists ``Features`` and often no model name (then the
    ``CPU part`` is kept, for what it is worth).

    >>> parse_cpuinfo("processor : 0\\nmodel name : AMD EPYC 7B12\\nflags : fpu avx2 fma\\n")
    {'model': 'AMD EPYC 7B12', 'flags': ['avx2', 'fma', 'fpu']}
    >>> parse_cpuinfo("processor : 0\\nFeatures : fp asimd bf16\\nCPU part : 0xd40\\n")
    {'model': 'CPU part 0xd40', 'flags': ['asimd', 'bf16', 'fp']}
    >>> parse_cpuinfo("")
    {'model': None, 'flags': []}
    """
    model: str | None = None
    part: str | None = None
    flags: set[str] = set()
    for line in text.splitlines():
        if not line.strip():
            if model or flags:
                break  # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "hardware", "processor name") and not model and value:
            model = value
        elif key == "cpu part" and not part:
            part = value
        elif key in ("flags", "features"):
            flags.update(value.split())
    if model is None and part:
        model = f"CPU part {part}"
    return {"model": model, "flags": sorted(flags)}


def native_support(flags: list[str] | set[str], machine: str) -> dict[str, bool | None]:
    """Whether bfloat16 and float16 matmuls are native, from CPU flags; ``None``: unknown.

    >>> native_support({"avx2", "fma"}, "x86_64")
    {'bfloat16': False, 'float16': False}
    >>> native_support({"avx512f", "avx512_bf16"}, "x86_64")
    {'bfloat16': True, 'float16': False}
    >>> native_support({"amx_bf16", "amx_fp16"}, "AMD64")
    {'bfloat16': True, 'float16': True}
    >>> native_support({"asimd", "asimdhp", "bf16"}, "aarch64")
    {'bfloat16': True, 'float16': True}
    >>> native_support(set(), "x86_64")  # no flags read: unknown
    {'bfloat16': None, 'float16': None}
    """
    flags = set(flags)
    arch = machine.lower()
    if not flags:
        return {"bfloat16": None, "float16": None}
    if arch in ("x86_64", "amd64", "i686", "i386", "x86"):
        return {
            "bfloat16": bool(flags & {"avx512_bf16", "amx_bf16"}),
            "float16": bool(flags & {"avx512_fp16", "amx_fp16"}),
        }
    if arch in ("aarch64", "arm64"):
        return {"bfloat16": "bf16" in flags, "float16": bool(flags & {"asimdhp", "fphp"})}
    return {"bfloat16": None, "float16": None}


@functools.lru_cache(maxsize=1)
def _cpu() -> dict[str, Any]:
    """Model name and flags of this CPU (read once): /proc/cpuinfo, or sysctl on macOS."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return parse_cpuinfo(handle.read())
    except OSError:
        pass
    if sys.platform == "darwin":
        return _darwin_cpu()
    return {"model": platform.processor() or None, "flags": []}


def _sysctl(name: str) -> str | None:
    try:
        out = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def _darwin_cpu() -> dict[str, Any]:
    """macOS: the brand string, and on Apple silicon the BF16/FP16 features sysctl reports."""
    flags = []
    if _sysctl("hw.optional.arm.FEAT_BF16") == "1":
        flags.append("bf16")
    if _sysctl("hw.optional.arm.FEAT_FP16") == "1":
        flags.append("fphp")
    if platform.machine() == "arm64":
        flags.append("asimd")
    return {"model": _sysctl("machdep.cpu.brand_string"), "flags": sorted(flags)}


def cpu_count() -> int:
    """CPUs this process may run on (its affinity where the OS tells, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_facts() -> dict[str, Any]:
    """This CPU and torch's view of it, as a JSON-ready dict.

    Keys: ``machine`` (architecture), ``model``, ``flags`` (the :data:`RELEVANT_FLAGS`
    present), ``cores`` (:func:`cpu_count`), ``native_bf16`` and ``native_fp16`` (``None``
    when unknown), ``torch``, ``torch_threads`` and ``torch_cpu_capability`` (``None``
    without torch).

    >>> facts = cpu_facts()
    >>> sorted(facts)[:4], isinstance(facts["cores"], int)
    (['cores', 'flags', 'machine', 'model'], True)
    """
    cpu = _cpu()
    machine = platform.machine()
    native = native_support(cpu["flags"], machine)
    facts: dict[str, Any] = {
        "machine": machine,
        "model": cpu["model"],
        "flags": [f for f in RELEVANT_FLAGS if f in set(cpu["flags"])],
        "cores": cpu_count(),
        "native_bf16": native["bfloat16"],
        "native_fp16": native["float16"],
        "torch": None,
        "torch_threads": None,
        "torch_cpu_capability": None,
    }
    try:
        import torch
    except ImportError:
        return facts
    facts["torch"] = torch.__version__
    facts["torch_threads"] = torch.get_num_threads()
    with_capability = getattr(torch.backends, "cpu", None)
    if with_capability is not None and hasattr(with_capability, "get_cpu_capability"):
        facts["torch_cpu_capability"] = with_capability.get_cpu_capability()
    return facts


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``packages`` (``None``: not installed), without importing them.

    >>> package_versions(("prefsmith", "no-such-package-here"))["no-such-package-here"] is None
    True
    """
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe_cpu(facts: dict[str, Any]) -> str:
    """One line: the CPU model, its bfloat16 support and torch's threads.

    >>> print(describe_cpu({"model": "AMD EPYC", "cores": 2, "native_bf16": False,
    ...       "flags": ["avx2"], "torch": "2.13.0+cpu", "torch_threads": 1}))
    ... # doctest: +NORMALIZE_WHITESPACE
    CPU: AMD EPYC, 2 cores; bfloat16: not native (no avx512_bf16/amx_bf16);
    torch 2.13.0+cpu, 1 thread
    """
    bf16 = {
        True: "native ("
        + "/".join(f for f in facts.get("flags", []) if f in ("avx512_bf16", "amx_bf16", "bf16"))
        + ")",
        False: "not native (no avx512_bf16/amx_bf16)",
        None: "unknown",
    }[facts.get("native_bf16")]
    line = f"CPU: {facts.get('model') or 'unknown'}, {facts.get('cores')} cores; bfloat16: {bf16}"
    if facts.get("torch"):
        threads = facts.get("torch_threads")
        line += f"; torch {facts['torch']}, {threads} thread{'' if threads == 1 else 's'}"
    return line


def slow_dtype_reason(dtype: str, device: str, facts: dict[str, Any]) -> str | None:
    """Why ``dtype`` on ``device`` is slow on the CPU ``facts`` describe; ``None`` if it is not.

    Only bfloat16 and float16 on the CPU are judged, and only when the facts know.

    >>> facts = {"model": "AMD EPYC 7B12", "machine": "x86_64", "flags": ["avx2", "fma"],
    ...          "native_bf16": False, "native_fp16": False}
    >>> print(slow_dtype_reason("bfloat16", "cpu", facts))  # doctest: +NORMALIZE_WHITESPACE
    this CPU (AMD EPYC 7B12) has no native bfloat16 (no avx512_bf16/amx_bf16): bfloat16 matmuls
    run ~100x slower than float32 here; use --dtype float32
    >>> slow_dtype_reason("bfloat16", "cuda", facts) is None
    True
    >>> slow_dtype_reason("bfloat16", "cpu", {**facts, "native_bf16": True}) is None
    True
    >>> slow_dtype_reason("float32", "cpu", facts) is None
    True
    """
    if device != "cpu" or dtype not in SLOWDOWN:
        return None
    native = facts.get("native_bf16" if dtype == "bfloat16" else "native_fp16")
    if native is not False:
        return None
    flags = set(facts.get("flags", []))
    arm = str(facts.get("machine", "")).lower() in ("aarch64", "arm64")
    if arm:
        missing = "no bf16 feature" if dtype == "bfloat16" else "no asimdhp/fphp feature"
    else:
        missing = "no avx512_bf16/amx_bf16" if dtype == "bfloat16" else "no avx512_fp16/amx_fp16"
    cpu = facts.get("model") or "unknown model"
    emulated = dtype == "bfloat16" and not arm and {"avx512bw", "avx512vl", "avx512dq"} <= flags
    if emulated:  # torch's oneDNN path emulates bfloat16 with AVX512
        cost = "bfloat16 is emulated with AVX512 here and not expected to beat float32"
    else:
        cost = f"{dtype} matmuls run {SLOWDOWN[dtype]} slower than float32 here"
    return f"this CPU ({cpu}) has no native {dtype} ({missing}): {cost}; use --dtype float32"


_warned: set[str] = set()


def warn_if_slow_dtype(dtype: str, device: str, stacklevel: int = 3) -> None:
    """Warn once per process and dtype (:class:`SlowDtypeWarning`) when ``dtype`` is slow here."""
    if device != "cpu" or dtype not in SLOWDOWN or dtype in _warned:
        return
    reason = slow_dtype_reason(dtype, device, cpu_facts())
    if reason:
        _warned.add(dtype)
        warnings.warn(reason, SlowDtypeWarning, stacklevel=stacklevel)


def load_average() -> float | None:
    """The 1-minute load average; ``None`` where the OS does not report one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def load_status(load: float | None = None, cores: int | None = None) -> dict[str, Any]:
    """The 1-minute load average against the core count: is the machine too busy to time?

    ``loaded`` is true when the load exceeds the cores (other processes then share them, and a
    timing measures them as much as the code); ``None`` when the load is unknown. Arguments
    default to this machine's.

    >>> load_status(6.3, 2)
    {'load_1m': 6.3, 'cores': 2, 'loaded': True}
    >>> load_status(0.4, 2)["loaded"], load_status(cores=2)["cores"]
    (False, 2)
    """
    load = load_average() if load is None else load
    cores = cpu_count() if cores is None else cores
    loaded = None if load is None else load > cores
    return {"load_1m": None if load is None else round(load, 2), "cores": cores, "loaded": loaded}


def load_note(status: dict[str, Any]) -> str:
    """How a table flags a timing taken on a loaded machine (empty when it was not loaded).

    >>> load_note(load_status(6.3, 2))
    'LOADED: load 6.3 > 2 cores; figures not comparable'
    >>> load_note(load_status(0.5, 2))
    ''
    """
    if not status.get("loaded"):
        return ""
    return f"LOADED: load {status['load_1m']:.1f} > {status['cores']} cores; figures not comparable"
