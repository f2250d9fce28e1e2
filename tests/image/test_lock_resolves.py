"""requirements.lock resolves, wheels only, for the image's Python and platform, against PyPI.

The image (Dockerfile) is Ubuntu 24.04 with its own python3 (3.12) and glibc 2.39, while the lock is
installed and tested here on whatever Python the venv has: a pin without a cp312 wheel, or a dependency
only Python 3.12 pulls in, would first show up when the release workflow builds the image. This asks pip
what it would install for that interpreter and platform (`pip install --dry-run --only-binary=:all:
--python-version 3.12 --implementation cp --platform manylinux_2_39_x86_64 ... -r requirements.lock`).

- PyPI is the source: the image installs the lock from PyPI, so the local wheel directories and mirrors of
  pip's configuration (PIP_FIND_LINKS, extra indexes, pip.conf) are left out.
- torch: the image takes torch==2.13.0+cu130 from the PyTorch CUDA index (unreachable from here); this
  resolves the same version from PyPI, whose Linux x86_64 cp312 wheel is the CUDA 13.0 build with the same
  nvidia-*/cuda-* dependencies. The test checks that this CUDA matches the base image's and the index's.
- Unreachable PyPI is a failure with a clear message, not a silent skip: set CANARY_SKIP_PYPI=1 to skip
  it knowingly (an offline machine).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPI = "https://pypi.org/simple"
SKIP_ENV = "CANARY_SKIP_PYPI"
# Each Ubuntu release the base image may use: its python3 and its glibc (manylinux_2_<minor> wheels up to it).
UBUNTU = {"24.04": ("3.12", 39), "22.04": ("3.10", 35)}
# What pip adds beside the lock for a Linux torch: its CUDA libraries, which come with the torch build.
TORCH_CUDA_FAMILY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_norm(name)] = version.strip()
    return pins


def image_facts() -> dict[str, str]:
    """The base image's CUDA and Ubuntu release, and the PyTorch index's CUDA, read from the Dockerfile."""
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+nvidia/cuda:(\d+)\.(\d+)\.\d+-\w+-ubuntu(\d+\.\d+)\s*$", text, re.M)
    index = re.search(r"^ARG\s+TORCH_INDEX_URL=\S+/whl/cu(\d+)\s*$", text, re.M)
    torch = re.search(r"^ARG\s+TORCH_VERSION=(\S+)\s*$", text, re.M)
    assert base and index and torch, "the Dockerfile's FROM nvidia/cuda:..., TORCH_INDEX_URL or TORCH_VERSION moved"
    assert base[3] in UBUNTU, f"base image on Ubuntu {base[3]}: add its python3 and glibc to UBUNTU in this test"
    return {"cuda": f"{base[1]}.{base[2]}", "ubuntu": base[3], "index_cuda": index[1], "torch": torch[1]}


def platforms(glibc_minor: int) -> list[str]:
    """The manylinux tags pip accepts on that glibc, newest first (pip does not expand --platform itself)."""
    tags = [f"manylinux_2_{m}_x86_64" for m in range(glibc_minor, 4, -1)]
    return tags + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def _pypi_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf: no local mirrors or wheel directories
    return env


def _require_pypi() -> None:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: not checking the lock against PyPI")
    try:
        urllib.request.urlopen(f"{PYPI}/pip/", timeout=15).close()
    except (urllib.error.URLError, OSError) as exc:
        pytest.fail(f"PyPI ({PYPI}) is unreachable ({exc}): this test checks that requirements.lock resolves "
                    f"for the image's Python there. Restore the network, or set {SKIP_ENV}=1 to skip it "
                    "knowingly.", pytrace=False)


@pytest.fixture(scope="module")
def resolution(tmp_path_factory) -> dict:
    """pip's --report of the dry run (what it would install), for the image's Python and platform."""
    _require_pypi()
    facts = image_facts()
    python, glibc = UBUNTU[facts["ubuntu"]]
    tmp = tmp_path_factory.mktemp("lock")
    report = tmp / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
           "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
           *(f"--platform={p}" for p in platforms(glibc)),
           # --target: older pips accept platform options only with it; nothing is written (dry run).
           "--target", str(tmp / "never-written"), "--index-url", PYPI, "--report", str(report),
           "-r", str(REPO / "requirements.lock")]
    proc = subprocess.run(cmd, env=_pypi_env(), capture_output=True, text=True, timeout=600)
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
    assert proc.returncode == 0, f"requirements.lock does not resolve for Python {python} on manylinux x86_64:\n{tail}"
    assert not (tmp / "never-written").exists()
    doc = json.loads(report.read_text())
    return {"python": python, "facts": facts,
            "install": {_norm(i["metadata"]["name"]): i for i in doc["install"]}}


def test_every_pin_resolves_at_its_version(resolution):
    got = {name: item["metadata"]["version"] for name, item in resolution["install"].items()}
    wrong = {name: (pin, got.get(name)) for name, pin in _lock().items() if got.get(name) != pin}
    assert not wrong, f"pins that resolve to another version (or none): {wrong}"


def test_the_lock_is_complete_for_the_image_python(resolution):
    """Nothing unpinned gets in, but torch's own CUDA libraries (they come with the torch build)."""
    lock = _lock()
    unpinned = sorted(f"{name}=={item['metadata']['version']}" for name, item in resolution["install"].items()
                      if name not in lock and not TORCH_CUDA_FAMILY.match(name))
    assert not unpinned, (f"Python {resolution['python']} would also install {unpinned}, which requirements.lock "
                          "does not pin: add them with these versions")


def test_wheels_are_for_the_image_python_and_platform(resolution):
    """Every pick is a wheel for CPython 3.12 (or abi3, or pure) on manylinux x86_64 (or any platform)."""
    python_tag = "cp" + resolution["python"].replace(".", "")
    bad = []
    for item in resolution["install"].values():
        wheel = item["download_info"]["url"].rsplit("/", 1)[-1]
        py, abi, plat = wheel.removesuffix(".whl").split("-")[-3:]  # name-version[-build]-py-abi-platform
        if not wheel.endswith(".whl") or abi not in (python_tag, "abi3", "none") or \
                not (plat == "any" or ("manylinux" in plat and plat.endswith("x86_64"))):
            bad.append(wheel)
    assert not bad, f"not a {python_tag} manylinux x86_64 (or pure) wheel: {bad}"
    torch = resolution["install"]["torch"]["download_info"]["url"].rsplit("/", 1)[-1]
    assert torch.startswith(f"torch-{resolution['facts']['torch']}-{python_tag}-{python_tag}-manylinux"), torch


def test_torch_cuda_matches_the_base_image(resolution):
    """The base image's CUDA, the PyTorch index's and the CUDA runtime torch 2.13.0 depends on agree."""
    facts = resolution["facts"]
    major, minor = facts["cuda"].split(".")
    assert facts["index_cuda"] == f"{major}{minor}", (
        f"the Dockerfile's base image has CUDA {facts['cuda']} but TORCH_INDEX_URL is .../cu{facts['index_cuda']}")
    runtime = resolution["install"]["nvidia-cuda-runtime"]["metadata"]["version"]
    assert runtime.split(".")[:2] == [major, minor], (
        f"torch {facts['torch']} is built for CUDA {runtime}, the base image has CUDA {facts['cuda']}")
