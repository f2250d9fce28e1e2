# rlhf-canary: the GitHub Action's image. A pinned CUDA runtime, the CUDA build of the pinned torch, the
# exact lock of the rest of the stack, then the package. Layers go from least to most often changed, so a
# code change rebuilds only the last two.
#
# GPU access: a container action cannot pass --gpus. Either make nvidia the runner host's default Docker
# runtime ("default-runtime": "nvidia" in /etc/docker/daemon.json), or run `canary` directly in a job-level
# `container:` with `options: --gpus all` (docs/action.md).
#
# torch 2.13.0 is built against CUDA 13.0 (its PyPI wheel depends on cuda-toolkit 13.0.x): the base image and
# the PyTorch index below must name the same CUDA. CUDA 13.0 needs an NVIDIA driver >= 580 on the host.
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    CANARY_CACHE_DIR=/opt/canary-cache

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python from the base image's Ubuntu release, and git for `baseline: ref:...` (the base as a worktree). Not
# pinned to exact package versions: the image tag fixes the release, and Ubuntu drops superseded package
# versions from its archive, so exact pins would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates git \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

# The CUDA build of torch first, from the PyTorch index for the base image's CUDA (a big layer that changes
# only with the pin); `pip install -r requirements.lock` then finds torch==2.13.0 already satisfied.
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION" \
    && python -c "import torch, sys; sys.exit(torch.version.cuda is None)"

COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir -r /tmp/requirements.lock \
    && pip check

# The package itself (not editable), then the entrypoint. canary_runner/configs and canary_runner/templates
# are symlinks to the top-level configs/ and templates/, so those are copied beside it for the wheel build.
COPY pyproject.toml README.md /opt/rlhf-canary/
COPY configs /opt/rlhf-canary/configs
COPY templates /opt/rlhf-canary/templates
COPY canary_runner /opt/rlhf-canary/canary_runner
RUN pip install --no-cache-dir --no-deps /opt/rlhf-canary \
    && canary --help > /dev/null
COPY entrypoint.py /opt/rlhf-canary/entrypoint.py

# Exec form: the runner passes inputs as INPUT_<NAME> variables whose names keep hyphens
# (INPUT_GITHUB-TOKEN); a /bin/sh wrapper would drop them before Python starts.
ENTRYPOINT ["/opt/venv/bin/python", "/opt/rlhf-canary/entrypoint.py"]
