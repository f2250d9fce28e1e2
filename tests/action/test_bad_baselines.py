"""A baseline the action cannot use never fails the PR, and `path:` baselines stay in the workspace.

entrypoint.py runs as GitHub runs the container, against the fake GitHub on loopback (every request
validated against GitHub's OpenAPI description). The current run is the session's real dpo_embedded
run (`seed_run`), passed as `metrics:`, so no case trains.
"""

from __future__ import annotations

import io
import json
import stat
import zipfile
import pytest
from werkzeug import Response

from .conftest import pr_event, push_event
from .test_entrypoint import BRANCH, CONFIG, copy_run, hardware_key

ARTIFACT = "canary-baseline"


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def damaged_zip(members: dict[str, bytes], target: str, how: str) -> bytes:
    """A zip of `members` with `target` damaged in place: `crc` flips one bit of its stored bytes (they
    no longer match the CRC-32 in the headers), `deflate` overwrites its deflate stream with garbage."""
    archive = zip_bytes(members, zipfile.ZIP_STORED if how == "crc" else zipfile.ZIP_DEFLATED)
    info = zipfile.ZipFile(io.BytesIO(archive)).getinfo(target)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(archive)
    if how == "crc":
        data[start + info.compress_size // 2] ^= 0x01
    else:
        data[start:start + 16] = b"\xff" * 16
    return bytes(data)


def serve_artifact(fake, blob_server, archive: bytes) -> None:
    fake.blob_base = blob_server.url_for("").rstrip("/")
    art = fake.add_artifact(ARTIFACT, archive, head_branch="main", created_at="2025-01-03T00:00:00Z")
    blob_server.expect_request(f"/artifact-{art['id']}.zip").respond_with_handler(
        lambda request: Response(fake.artifact_zips[art["id"]], content_type="application/zip"))


def assert_compared_without_a_baseline(result, *why: str) -> None:
    """Exit 0, verdict no-baseline, a warning that says why, and the baseline-free checks ran."""
    assert result.returncode == 0, result.log
    assert result.outputs["verdict"] == "no-baseline", result.log
    warnings = [w for w in result.commands("warning") if "not usable" in w or "could not be read" in w]
    assert warnings, result.stdout
    for words in why:
        assert any(words in w for w in warnings), (words, warnings)
    doc = json.loads(result.path("comparison-path").read_text())
    ran = {c["id"]: c["status"] for c in doc["checks"] if c["status"] != "skip"}
    assert ran.get("stability.nan_inf") == "pass", ran
    assert "Traceback" not in result.log


def test_a_baseline_of_a_newer_schema_is_left_out_with_the_reason(run_action, fake, blob_server, seed_run):
    newer = json.loads(seed_run.read_text())
    newer["schema_version"] = 2
    serve_artifact(fake, blob_server, zip_bytes({"metrics.json": json.dumps(newer).encode()}))
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"metrics": str(seed_run), "baseline": f"artifact:{ARTIFACT}"})
    assert_compared_without_a_baseline(result, "schema_version 2 is not supported")
    # What the next step (actions/upload-artifact, another user) reads is world-readable (and, written by
    # the action, removable: tests/image/test_workspace_modes.py).
    for output in ("comparison-path", "report-path"):
        assert stat.S_IMODE(result.path(output).stat().st_mode) & 0o644 == 0o644, output


@pytest.mark.parametrize("how, words", [("crc", "Bad CRC-32"), ("deflate", "corrupt or unreadable")])
def test_a_corrupt_member_beside_a_good_metrics_json_is_not_trusted(run_action, fake, blob_server, seed_run,
                                                                   tmp_path, how, words):
    good = copy_run(seed_run, tmp_path / "good").read_bytes()
    members = {"metrics.json": good, "repeat-2/metrics.json": good}
    serve_artifact(fake, blob_server, damaged_zip(members, "repeat-2/metrics.json", how))
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"metrics": str(seed_run), "baseline": f"artifact:{ARTIFACT}"})
    assert_compared_without_a_baseline(result, "repeat-2/metrics.json", words)


@pytest.mark.parametrize("body, words", [
    ({"type": "symlink", "target": "/etc/passwd", "name": "metrics.json", "path": "x", "sha": "0" * 40,
      "size": 11}, "answered a 'symlink' entry"),
    ([{"type": "file", "name": "a.json", "path": "a.json", "sha": "0" * 40}], "is a directory"),
])
def test_an_unexpected_contents_api_answer_is_no_usable_baseline(run_action, fake, seed_run, body, words):
    fake.put_file(BRANCH, f"{CONFIG}/{hardware_key(seed_run)}/metrics.json", seed_run.read_bytes())
    fake.fault("GET", r"/contents/.+/metrics\.json$", status=200, body=body)
    result = run_action(event_name="pull_request", event=pr_event(fake.repo), inputs={"metrics": str(seed_run)})
    assert_compared_without_a_baseline(result, words)


def test_a_baseline_that_never_trained_is_left_out(run_action, fake, seed_run):
    record = json.loads(seed_run.read_text())
    record["series"] = {k: [] for k in record["series"]}
    record["run"]["steps_completed"] = 0
    (run_action.workspace / "empty").mkdir()
    (run_action.workspace / "empty" / "metrics.json").write_text(json.dumps(record))
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"metrics": str(seed_run), "baseline": "path:empty"})
    assert_compared_without_a_baseline(result, "without recording a single step")


# ------------------------------------------------------------------------------ path: and the workspace
@pytest.mark.parametrize("spec, words", [
    ("path:../outside", "contains '..'"),
    ("path:/etc", "is outside the workspace"),
    ("path:escape", "leads (through a symlink) outside the workspace"),
])
def test_path_baselines_outside_the_workspace_are_bad_input(run_action, fake, seed_run, tmp_path, spec, words):
    (tmp_path / "outside").mkdir()
    (run_action.workspace / "escape").symlink_to(tmp_path / "outside")
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"metrics": str(seed_run), "baseline": spec})
    assert result.returncode == 2, result.log
    assert any(words in e for e in result.commands("error")), result.stdout
    assert "Traceback" not in result.log


def test_update_baseline_never_writes_through_a_symlink(run_action, fake, seed_run, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    store = run_action.workspace / "baselines"
    store.mkdir()
    (store / CONFIG).symlink_to(victim)  # a link planted inside the store, pointing elsewhere
    result = run_action(event_name="push", event=push_event(fake.repo),
                        inputs={"metrics": str(seed_run), "mode": "update-baseline", "baseline": "path:baselines"})
    assert any("refusing to write the baseline through the symlink" in e for e in result.commands("error")), \
        result.stdout
    assert list(victim.iterdir()) == []
    assert "Traceback" not in result.log


def test_a_symlinked_file_in_a_path_baseline_is_not_read(run_action, fake, seed_run, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_bytes(copy_run(seed_run, tmp_path / "elsewhere").read_bytes())
    store = run_action.workspace / "store"
    store.mkdir()
    (store / "metrics.json").symlink_to(secret)
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"metrics": str(seed_run), "baseline": "path:store"})
    assert_compared_without_a_baseline(result, "leads outside the workspace")
    assert not (result.workspace / f"canary-results/{CONFIG}/baseline").exists()


def test_a_baseline_compare_cannot_take_still_leaves_the_run_compared(run_action, fake, seed_run):
    """The last line of defence: whatever compare refuses in a baseline that the loading checks let
    through (here a recorded config that is not one canary config) means comparing without it."""
    record = json.loads(copy_run(seed_run, run_action.root / "odd").read_text())
    record["config"]["seed"] = {"not": "a seed"}
    (run_action.workspace / "odd").mkdir()
    (run_action.workspace / "odd" / "metrics.json").write_text(json.dumps(record))
    result = run_action(event_name="pull_request", event=pr_event(fake.repo),
                        inputs={"metrics": str(seed_run), "baseline": "path:odd"})
    assert_compared_without_a_baseline(result, "compare with it failed (exit 2)")
