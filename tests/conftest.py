"""Shared test setup: offline, and one on-disk cache of the embedded models for the whole session."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# The embedded workload never needs the Hub; make sure nothing waits on it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("CANARY_CACHE_DIR", str(REPO / ".cache" / "canary"))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def configs_dir(repo) -> Path:
    return repo / "configs"
