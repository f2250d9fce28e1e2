"""Report tests: comparison.json fixtures (hand-made and from real runs) and golden files.

Regenerate the golden files after an intended change of the report with
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/report -q
and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
GOLDEN = HERE / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
LINKS = {
    "run_url": "https://github.com/acme/trainer/actions/runs/123456",
    "artifact_url": "https://github.com/acme/trainer/actions/runs/123456/artifacts/789",
    "report_path": "canary-report/report.md",
}


def fixture_names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def fixture_path(name: str) -> Path:
    return FIXTURES / f"{name}.json"


def load_fixture(name: str) -> dict:
    from canary_runner.report import load_comparison

    return load_comparison(fixture_path(name))


def raw_fixture(name: str) -> dict:
    return json.loads(fixture_path(name).read_text())


def assert_golden(name: str, text: str) -> None:
    """`text` equals golden/`name`; with UPDATE_GOLDEN=1 the file is (re)written instead."""
    path = GOLDEN / name
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"golden file {path} was missing and has been written; review it and re-run")
        return
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{path} differs from the rendering; if intended, regenerate with UPDATE_GOLDEN=1"
