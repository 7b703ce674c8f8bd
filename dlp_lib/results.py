"""Result records: one JSON per run, with the full configuration, package versions, per-block
sparsities, perplexity and timings; cached by a hash of the configuration; written atomically. A path a
user gives for a record (``--save``) may take only a record: a file there that is not one is left alone."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path

from .cache import OutputError, check_writable, stable_hash, write_json_atomic
from .evopress_file import FORMAT as EVOPRESS_FORMAT

VERSIONED_PACKAGES = ("dlp_lib", "torch", "transformers", "datasets", "lm_eval", "accelerate", "numpy")


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
    return versions


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def math_libraries(config: str) -> dict:
    """BLAS/LAPACK and the math-library builds named in ``torch.__config__.show()``: what decides the
    float rounding of a CPU run (``mkl``, ``openblas``; MKL and oneDNN versions)."""
    info = {}
    for line in config.splitlines():
        line = line.strip().removeprefix("- ").removeprefix("Build settings: ")
        if "Math Kernel Library Version" in line or line.startswith(("OpenBLAS", "Intel(R) MKL-DNN", "oneDNN")):
            info.setdefault("libraries", []).append(line.split(" for ")[0].split(" (Git Hash")[0])
        for item in line.split(", "):
            key, _, value = item.partition("=")
            if key.strip() in ("BLAS_INFO", "LAPACK_INFO"):
                info[key.strip().lower()] = value.strip().rstrip(",")
    return info


def hardware() -> dict:
    """What produced a record's numbers: CPU model and its vector kernels, threads, BLAS/oneDNN build,
    and the GPU, its compute capability, CUDA and driver version when CUDA is used."""
    import torch

    info = {
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **math_libraries(torch.__config__.show()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["cuda"] = torch.version.cuda
        info["gpu_driver"] = gpu_driver()
    return info


def gpu_driver() -> str | None:
    """The NVIDIA driver version from ``nvidia-smi`` (None where it is not available)."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def machine_label(info: dict | None) -> str:
    """One line for captions: ``AMD EPYC (AVX2, 2 threads), torch 2.13.0, BLAS mkl`` (+ the GPU)."""
    if not info:
        return "unknown machine (the records do not name it)"
    cpu = info.get("cpu_model") or info.get("processor") or info.get("machine") or "unknown CPU"
    details = ", ".join(str(x) for x in (info.get("cpu_capability"), f"{info.get('cpu_threads')} threads") if x)
    label = f"{cpu} ({details})"
    if info.get("torch"):
        label += f", torch {info['torch']}"
    if info.get("blas_info"):
        label += f", BLAS {info['blas_info']}"
    if info.get("gpu"):
        label += f", GPU {info['gpu']} (CUDA {info.get('cuda')}, driver {info.get('gpu_driver')})"
    return label


def config_key(config_dict: dict) -> str:
    """A short hash that identifies a run's full configuration."""
    return stable_hash(config_dict)


def record_path(results_dir: str | Path, config_dict: dict) -> Path:
    return Path(results_dir) / f"{config_key(config_dict)}.json"


def load_record(path: str | Path) -> dict | None:
    """The record at ``path``, or None if missing or unreadable (a corrupt file is treated as missing)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save_record(path: str | Path, record: dict) -> None:
    write_json_atomic(path, record)


# the fields that tell each kind of record a command writes with --save
RUN_FIELDS = ("config", "versions")  # dlp-prune (pipeline.run)
SEARCH_FIELDS = ("best", "candidates", "history", "config", "fitness")  # dlp-search (SearchResult.to_dict)
RECORD_BYTES = 2**30  # a larger file is no record: not read to find out


def is_record(obj) -> bool:
    """Whether ``obj``, a parsed JSON file, is a record a dlp_lib command writes with ``--save``: a run's
    (dlp-prune), a DSA search's (dlp-search) or an EvoPress search's (dlp-evopress)."""
    if not isinstance(obj, dict):
        return False
    run, search = (all(k in obj for k in fields) for fields in (RUN_FIELDS, SEARCH_FIELDS))
    return run or search or obj.get("format") == EVOPRESS_FORMAT


def _reads_as_record(path: Path) -> bool:
    try:
        if path.stat().st_size > RECORD_BYTES:
            return False
        with open(path, "rb") as f:
            if f.read(64).lstrip()[:1] != b"{":
                return False
        return is_record(json.loads(path.read_text()))
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        return False


def check_record_path(path: str | os.PathLike, what: str, example: str | None = None) -> Path:
    """Raise ConfigError (one line) unless the record ``what`` may be written at ``path``: a writable place
    whose names the file system can hold, and either nothing there or a dlp_lib record (:func:`is_record`,
    of any command: re-running replaces its own record). A directory is refused (naming ``example``, a
    file name for in it, if given), as is any other file: it is not ours to replace. Returns ``path``."""
    path = Path(path).expanduser()
    check_writable(path, what)  # names the file system can hold, before a stat of them could fail
    if path.is_dir():
        hint = f"give a file path such as {path / example}" if example else "move it away or give another path"
        raise OutputError(f"cannot write {what} to {path}: it is a directory; {hint}")
    if path.exists() and not _reads_as_record(path):
        raise OutputError(
            f"cannot write {what} to {path}: a file that is not a dlp_lib record is there, and it is left as it is; "
            "give another path, or move it away"
        )
    return path
