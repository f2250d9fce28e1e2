"""The environment fingerprint: what hardware and software a run measured.

Baselines are keyed by `hardware_key`, so an A100 run is never compared with an H100 baseline, and
compare lists library version changes as likely causes of a regression.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata

# Set by `canary run --install` for the run it starts in the overlay: {"lines": [...], "changed": [...]}.
INSTALL_ENV = "CANARY_INSTALL_RECORD"

PACKAGES = ("torch", "trl", "transformers", "peft", "accelerate", "datasets", "tokenizers", "safetensors",
            "numpy", "bitsandbytes")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _driver_version() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return out.strip().splitlines()[0] or None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def fingerprint() -> dict:
    import torch

    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {
            "name": props.name,
            "count": torch.cuda.device_count(),
            "driver": _driver_version(),
            "memory_total_mb": round(props.total_memory / 2**20),
            "capability": f"{props.major}.{props.minor}",
        }
    cpu = cpu_model()
    cpus = os.cpu_count()
    if gpu:
        hardware_key = f"{slug(gpu['name'])}-x{gpu['count']}"
    else:
        hardware_key = f"cpu-{slug(cpu or platform.machine())}-{cpus}c"
    nccl = None
    if torch.cuda.is_available() and hasattr(torch.cuda, "nccl"):
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:
            nccl = None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    install = _install_record()
    # A package the install changed is fingerprinted too, so the environment diff names it.
    names = list(PACKAGES)
    if install:
        names += [c["name"] for c in install["changed"] if c["name"] not in PACKAGES]
    fp = {
        "hardware_key": hardware_key[:120],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu,
        "cpu_count": cpus,
        "gpu": gpu,
        "cuda": torch.version.cuda,
        "cudnn": str(cudnn) if cudnn else None,
        "nccl": nccl,
        "packages": {p: _version(p) for p in names},
    }
    if install:
        fp["install"] = install
    return fp


def _install_record() -> dict | None:
    text = os.environ.get(INSTALL_ENV)
    if not text:
        return None
    try:
        record = json.loads(text)
        return {"lines": [str(x) for x in record["lines"]],
                "changed": [{"name": str(c["name"]), "old": c.get("old"), "new": c.get("new")} for c in record["changed"]]}
    except (ValueError, KeyError, TypeError):
        return None
