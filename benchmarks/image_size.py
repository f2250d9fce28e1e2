"""Estimate the action image's size, layer by layer, from the Dockerfile and requirements.lock.

    .venv/bin/python benchmarks/image_size.py [--pip-report FILE] [--json OUT]

No Docker needed: the Python layers are the wheels pip picks for the image's Python (Ubuntu 24.04's
python3, 3.12) on manylinux x86_64, found with the same `pip install --dry-run --report` as
tests/image/test_lock_resolves.py, each sized from PyPI's JSON API (`https://pypi.org/pypi/<name>/<version>/json`:
the download, compressed) and from the wheel's zip central directory, read with HTTP range requests
(unpacked: what the layer holds, before pip's .pyc files). torch's own wheel comes from the PyTorch CUDA
index in the image; PyPI's torch 2.13.0 cp312 manylinux wheel is the same CUDA 13.0 build and stands in
for it. The base image cannot be pulled here: its CUDA runtime libraries are sized from NVIDIA's wheels of
the same libraries (the runtime flavour's apt packages ship the same .so files), and Ubuntu itself and the
apt layer are the constants below, with their sources. docs/image.md holds the budget these figures
support; CI prints the real layer sizes (`docker history`) of every image it builds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parents[1]
PYPI = "https://pypi.org"
MB = 1_000_000
# The image's Ubuntu release: its python3 and glibc (manylinux_2_<minor> wheels up to it).
UBUNTU = {"24.04": ("3.12", 39)}
# Constants for what cannot be measured here (no Docker engine, no registry but PyPI).
UBUNTU_24_04_MB = (29, 78)  # ubuntu:24.04 amd64 on Docker Hub: ~29 MB compressed, ~78 MB unpacked
APT_LAYER_MB = (60, 200)  # python3 (3.12), python3-venv, git, ca-certificates with their dependencies:
#                           rough, from the packages' Installed-Size on Ubuntu 24.04; CI's docker history has the truth
# The CUDA runtime flavour adds (to its base flavour) cuda-libraries-13-0, cuda-nvtx, libnpp, libcublas and
# libnccl2: these PyPI wheels hold the same libraries.
RUNTIME_LIBRARY_WHEELS = ("nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "nvidia-cublas", "nvidia-cufft",
                          "nvidia-cufile", "nvidia-curand", "nvidia-cusolver", "nvidia-cusparse", "nvidia-npp",
                          "nvidia-nvjpeg", "nvidia-nvjitlink", "nvidia-nvfatbin", "nvidia-nvtx", "nvidia-nccl-cu13")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_facts() -> dict[str, str]:
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(nvidia/cuda:(\d+\.\d+)\.\d+-(\w+)-ubuntu(\d+\.\d+))\s*$", text, re.M)
    torch = re.search(r"^ARG\s+TORCH_VERSION=(\S+)\s*$", text, re.M)
    if not (base and torch) or base[4] not in UBUNTU:
        sys.exit("image_size: the Dockerfile's FROM nvidia/cuda:<x.y.z>-<flavour>-ubuntu<release> or TORCH_VERSION moved")
    return {"base": base[1], "cuda": base[2], "flavour": base[3], "ubuntu": base[4], "torch": torch[1]}


def pip_report(python: str, glibc: int, out: Path) -> dict:
    """What pip would install for the image (the same dry run as tests/image/test_lock_resolves.py)."""
    platforms = [f"manylinux_2_{m}_x86_64" for m in range(glibc, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX")}
    env["PIP_CONFIG_FILE"] = os.devnull
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
               *(f"--platform={p}" for p in platforms), "--target", str(Path(tmp) / "t"),
               "--index-url", f"{PYPI}/simple", "--report", str(out), "-r", str(REPO / "requirements.lock")]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"image_size: pip could not resolve requirements.lock:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def _get(url: str, headers: dict | None = None) -> bytes:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.read()


def release_files(name: str, version: str) -> list[dict]:
    """The files of one release, from PyPI's JSON API (the per-project document where a mirror lacks the
    per-version one)."""
    url = f"{PYPI}/pypi/{name}/{version}/json"
    try:
        files = json.loads(_get(url))["urls"]
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
        url = f"{PYPI}/pypi/{name}/json"
        releases = json.loads(_get(url))["releases"]
        files = next(f for v, f in releases.items() if _same_version(v, version))
    return [{**f, "url": urllib.parse.urljoin(url, f["url"])} for f in files]  # a mirror's may be relative


def _same_version(a: str, b: str) -> bool:
    """13.0.3.0 is 13.0.3 (the metadata and the index may spell a release differently)."""
    try:
        return Version(a) == Version(b)
    except InvalidVersion:  # old releases with non-PEP 440 names
        return a == b


class RangeFile(io.RawIOBase):
    """A remote file read with HTTP range requests, enough for zipfile to read a central directory."""

    def __init__(self, url: str, size: int):
        self.url, self.size, self.pos = url, size, 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buf) -> int:
        end = min(self.size, self.pos + len(buf)) - 1
        if end < self.pos:
            return 0
        data = _get(self.url, {"Range": f"bytes={self.pos}-{end}"})
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)


def wheel_sizes(name: str, version: str, filename: str) -> dict:
    """Download size (PyPI's JSON) and unpacked size (the zip's central directory) of one wheel."""
    info = next((f for f in release_files(name, version) if f["filename"] == filename), None)
    if info is None:
        raise LookupError(f"{filename} is not among PyPI's files of {name} {version}")
    with zipfile.ZipFile(io.BufferedReader(RangeFile(info["url"], info["size"]), buffer_size=1 << 16)) as zf:
        entries = zf.infolist()
    return {"name": name, "version": version, "wheel": filename, "download": info["size"],
            "unpacked": sum(e.file_size for e in entries),
            "py": sum(e.file_size for e in entries if e.filename.endswith(".py"))}


def torch_closure(install: dict[str, dict], python: str) -> set[str]:
    """torch and everything it pulls in: what the Dockerfile's torch layer installs (from the PyTorch index);
    the lock layer then finds these already satisfied."""
    env = default_environment()
    env.update(python_version=python, python_full_version=f"{python}.0", sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", implementation_name="cpython")
    todo, seen = [("torch", frozenset())], set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen or name not in install:
            continue
        seen.add((name, extras))
        for raw in install[name]["metadata"].get("requires_dist") or []:
            req = Requirement(raw)
            if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
                todo.append((norm(req.name), frozenset(req.extras)))
    return {name for name, _ in seen}


def runtime_library_versions(install: dict[str, dict]) -> dict[str, str]:
    """The CUDA library wheels standing in for the base image's runtime libraries, at the versions that
    cuda-toolkit (torch's CUDA) names in its extras."""
    versions = {}
    for raw in install.get("cuda-toolkit", {}).get("metadata", {}).get("requires_dist") or []:
        req = Requirement(raw)
        spec = next(iter(req.specifier), None)
        if spec is not None and norm(req.name) in RUNTIME_LIBRARY_WHEELS:
            versions[norm(req.name)] = spec.version.removesuffix(".*")
    for name in RUNTIME_LIBRARY_WHEELS:
        if name in install:
            versions[name] = install[name]["metadata"]["version"]
    return versions


def best_wheel(name: str, version: str) -> str:
    """The manylinux x86_64 (or pure) wheel pip would pick among a release's files, for a library that is
    not in the resolution (highest glibc it can have first)."""
    names = [f["filename"] for f in release_files(name, version) if f["filename"].endswith(".whl")]
    fitting = [n for n in names if re.search(r"(manylinux\w*x86_64|-any)\.whl$", n)]
    if not fitting:
        raise LookupError(f"{name} {version}: no manylinux x86_64 wheel")
    return sorted(fitting)[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pip-report", type=Path, help="reuse a pip --report of the same dry run")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    facts = image_facts()
    python, glibc = UBUNTU[facts["ubuntu"]]
    with tempfile.TemporaryDirectory() as tmp:
        report = json.loads(args.pip_report.read_text()) if args.pip_report else \
            pip_report(python, glibc, Path(tmp) / "report.json")
    install = {norm(i["metadata"]["name"]): i for i in report["install"]}
    wanted = {name: (i["metadata"]["version"], i["download_info"]["url"].rsplit("/", 1)[-1])
              for name, i in install.items()}
    runtime = runtime_library_versions(install)
    extra = {f"base:{n}": (v, None) for n, v in runtime.items()}

    def size(item):
        key, (version, wheel) = item
        name = key.removeprefix("base:")
        return key, wheel_sizes(name, version, wheel or best_wheel(name, version))

    with ThreadPoolExecutor(8) as pool:
        sizes = dict(pool.map(size, [*wanted.items(), *extra.items()]))

    in_torch_layer = torch_closure(install, python)
    layers = {
        f"base {facts['base']}: Ubuntu {facts['ubuntu']}": {"download": UBUNTU_24_04_MB[0] * MB,
                                                            "unpacked": UBUNTU_24_04_MB[1] * MB, "items": []},
        f"base {facts['base']}: CUDA {facts['flavour']} libraries": _layer(
            [sizes[k] for k in extra]),
        "apt: python3, python3-venv, git, ca-certificates": {"download": APT_LAYER_MB[0] * MB,
                                                              "unpacked": APT_LAYER_MB[1] * MB, "items": []},
        f"pip: torch {facts['torch']} (CUDA {facts['cuda']}) and its dependencies": _layer(
            [sizes[n] for n in wanted if n in in_torch_layer]),
        "pip: requirements.lock (the rest)": _layer([sizes[n] for n in wanted if n not in in_torch_layer]),
    }
    total = {k: sum(layer[k] for layer in layers.values()) for k in ("download", "unpacked")}

    print(f"# Image size estimate: {facts['base']}, Python {python}, torch {facts['torch']}\n")
    print("| layer | download (compressed) MB | unpacked MB |\n| --- | ---: | ---: |")
    for title, layer in layers.items():
        print(f"| {title} | {layer['download'] / MB:,.0f} | {layer['unpacked'] / MB:,.0f} |")
    print(f"| **total** | **{total['download'] / MB:,.0f}** | **{total['unpacked'] / MB:,.0f}** |\n")
    for title, layer in layers.items():
        if layer["items"]:
            biggest = sorted(layer["items"], key=lambda s: -s["unpacked"])[:8]
            print(f"{title}: " + ", ".join(f"{s['name']} {s['unpacked'] / MB:,.0f}" for s in biggest))
    py = sum(s["py"] for k, s in sizes.items() if not k.startswith("base:"))
    print(f"\n.py sources in the pip layers: {py / MB:,.0f} MB (pip also writes .pyc files for them, about as much)")
    if args.json:
        args.json.write_text(json.dumps({"facts": facts, "layers": layers, "total": total}, indent=1) + "\n")
    return 0


def _layer(items: list[dict]) -> dict:
    return {"download": sum(s["download"] for s in items), "unpacked": sum(s["unpacked"] for s in items),
            "items": items}


if __name__ == "__main__":
    sys.exit(main())
