"""The history index in each store: retention, bad indexes, branch: through the fake GitHub (every
request validated against GitHub's OpenAPI description), artifact: read-only, `canary baseline history`."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime, timedelta, timezone

import pytest
from github.conftest import blob_server, client, fake, openapi, sleeps  # noqa: F401

from canary_runner.cli import main
from canary_runner.history import index as ix
from canary_runner.history import store

BRANCH = "canary-baselines"
HW = "nvidia-h100-x1"
CONFIG = "dpo_embedded"
FOLDER = f"{CONFIG}/{HW}"


def sha(i: int) -> str:
    return f"{i:04x}" * 10


def record(i: int, *, days_ago: float = 0.0, step_time: float = 0.1, config: str = CONFIG, hw: str = HW) -> dict:
    ended = datetime.now(timezone.utc) - timedelta(days=days_ago)
    return {"schema_version": 1, "status": "completed",
            "run": {"config_name": config, "git_sha": sha(i), "steps_completed": 8, "ended_at": ended.isoformat(),
                    "started_at": ended.isoformat()},
            "env": {"hardware_key": hw},
            "summary": {"step_time_s": {"median": step_time}, "tokens_per_s": {"median": 1000.0 / step_time},
                        "loss": {"final": 0.7}, "peak_memory": {"cpu_rss_anon_mb": 300.0}},
            "series": {"step": list(range(1, 9))}}


def write_run(tmp_path, rec: dict):
    path = tmp_path / f"run-{rec['run'].get('git_sha', 'x')[:8]}-{rec['run']['ended_at'][:19]}.json"
    path.write_text(json.dumps(rec))
    return path


# ------------------------------------------------------------------------------------ retention
def test_push_keeps_the_index_by_count_and_by_age(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # not a git repository: parents are unknown (null)
    for i, days in enumerate([400, 300, 200, 100, 3, 2, 1]):
        run = write_run(tmp_path, record(i, days_ago=days, step_time=0.1 + i / 100))
        assert main(["baseline", "push", "path:store", str(run), "--keep-history", "2",
                     "--history-max", "3", "--history-days", "250"]) == 0
    idx = store.read_index("path:store", CONFIG, None)
    # By age: 400 and 300 days old are gone (older than 250 days); by count: the newest 3 remain.
    assert [e.sha for e in idx.entries] == [sha(4), sha(5), sha(6)]
    assert all(e.parent is None for e in idx.entries)
    # --keep-history 2 keeps two full records: the oldest entry keeps its numbers but names no file.
    assert idx.entries[0].file is None and idx.entries[0].values["step_time_s"] == pytest.approx(0.14)
    for e in idx.entries[1:]:
        assert (tmp_path / "store" / FOLDER / e.file).is_file()
    capsys.readouterr()

    # An age limit alone drops everything older, whatever the count.
    run = write_run(tmp_path, record(7, days_ago=0))
    assert main(["baseline", "push", "path:store", str(run), "--history-days", "1.5"]) == 0
    assert [e.sha for e in store.read_index("path:store", CONFIG, HW).entries] == [sha(6), sha(7)]


def test_push_records_the_parent_from_git(tmp_path, monkeypatch, capsys):
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", ".")
    git("commit", "-q", "--allow-empty", "-m", "one")
    git("commit", "-q", "--allow-empty", "-m", "two")
    head, parent = git("rev-parse", "HEAD"), git("rev-parse", "HEAD^")
    monkeypatch.chdir(tmp_path)
    rec = record(1)
    del rec["run"]["git_sha"]  # the commit comes from `git rev-parse HEAD`
    monkeypatch.delenv("GITHUB_SHA", raising=False)
    assert main(["baseline", "push", "path:store", str(write_run(tmp_path, rec))]) == 0
    (entry,) = store.read_index("path:store", CONFIG, HW).entries
    assert (entry.sha, entry.parent) == (head, parent)
    assert entry.timestamp == rec["run"]["ended_at"]


# ------------------------------------------------------------------------------------ bad indexes
def put_index(tmp_path, raw: bytes, hw: str = HW):
    path = tmp_path / "store" / CONFIG / hw / "index.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("raw, says", [
    (b"{not json", "is not valid JSON"),
    (json.dumps({"version": 99, "entries": []}).encode(), "is not a version-1 history index"),
    (json.dumps({"version": 1, "entries": [{"sha": "../../etc", "timestamp": "2025-01-01T00:00:00"}]}).encode(),
     "entry 0 is malformed"),
    (json.dumps({"version": 1, "entries": [{"sha": "ab" * 20, "timestamp": "2025-01-01T00:00:00",
                                            "file": "../../../outside.json"}]}).encode(), "entry 0 is malformed"),
    (b" " * (ix.MAX_INDEX_BYTES + 1), f"an index may be at most {ix.MAX_INDEX_BYTES}"),
])
def test_a_malformed_or_oversized_index_is_a_clear_error(tmp_path, capsys, raw, says):
    path = put_index(tmp_path, raw)
    with pytest.raises(store.HistoryError, match=says) as err:
        store.read_index(f"path:{tmp_path / 'store'}", CONFIG, HW)
    assert str(path) in str(err.value)
    assert main(["baseline", "history", "--baseline", f"path:{tmp_path / 'store'}", "--config", CONFIG]) == 3
    assert says in capsys.readouterr().err


def test_an_entry_file_is_used_only_in_the_shape_the_writer_gives_it():
    entry = ix.Entry(sha="ab" * 20, parent=None, timestamp="2025-01-01T00:00:00+00:00", values={})
    for name, ok in [("history/20250101T000000Z-abababababab.json", True), ("metrics.json", False),
                     ("history/sub/x.json", False), ("history/.hidden.json", False), ("/etc/passwd", False)]:
        entry.file = name
        assert (store.full_record_path(entry) is not None) is ok, name


def test_history_cli_says_what_is_missing_and_refuses_bad_input(tmp_path, capsys):
    root = f"path:{tmp_path / 'store'}"
    assert main(["baseline", "history", "--baseline", root, "--config", CONFIG]) == 0
    assert "no history for config 'dpo_embedded'" in capsys.readouterr().err
    assert main(["baseline", "history", "--baseline", root, "--config", CONFIG, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["found"] is False
    assert main(["baseline", "history", "--baseline", "nowhere", "--config", CONFIG]) == 2
    assert "has no kind" in capsys.readouterr().err
    assert main(["baseline", "history", "--baseline", root, "--config", ".."]) == 2
    assert "cannot name a baseline" in capsys.readouterr().err
    assert main(["baseline", "history", "--baseline", "ref:base", "--config", CONFIG]) == 2
    # Two hardware keys and none chosen: a clear error naming both.
    for hw in (HW, "cpu-x"):
        idx = ix.new(CONFIG, hw)
        put_index(tmp_path, idx.dumps(), hw)
    assert main(["baseline", "history", "--baseline", root, "--config", CONFIG]) == 2
    err = capsys.readouterr().err
    assert "cpu-x" in err and HW in err and "--hardware" in err


def test_history_cli_prints_one_line_per_commit_and_one_metric(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for i in range(3):
        assert main(["baseline", "push", "path:store", str(write_run(tmp_path, record(i, step_time=0.1 * (i + 1))))]) == 0
    capsys.readouterr()
    assert main(["baseline", "history", "--baseline", "path:store", "--config", CONFIG]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(f"  {sha(0)[:4]}") or
             ln.startswith("  0001") or ln.startswith("  0002")]
    assert len(lines) == 3 and "0.3" in lines[-1]
    assert main(["baseline", "history", "--baseline", "path:store", "--config", CONFIG,
                 "--metric", "step_time_s", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["value"] for p in doc["series"]] == pytest.approx([0.1, 0.2, 0.3])
    assert [p["sha"] for p in doc["series"]] == [sha(0), sha(1), sha(2)]


def test_a_path_store_outside_the_workspace_is_refused(tmp_path):
    (tmp_path / "ws").mkdir()
    with pytest.raises(store.BaselineSpecError, match="outside the workspace"):
        store.read_index(f"path:{tmp_path}", CONFIG, HW, workspace=tmp_path / "ws")
    (tmp_path / "ws" / "link").symlink_to(tmp_path)
    with pytest.raises(store.BaselineSpecError, match="through a symlink"):
        store.read_index("path:link", CONFIG, HW, workspace=tmp_path / "ws")


# ------------------------------------------------------------------------------------ branch: store
def test_branch_store_one_read_and_writes_that_keep_a_concurrent_entry(fake, client):  # noqa: F811
    fake.put_file(BRANCH, "README.md", b"baselines")
    for i in range(2):
        store.record_baseline(f"branch:{BRANCH}", record(i), sha=sha(i), parent=sha(i - 1) if i else None,
                              file=f"history/2025-{sha(i)[:12]}.json", client=client)
    assert json.loads(fake.files[BRANCH][f"{FOLDER}/index.json"])["entries"][1]["parent"] == sha(0)

    # Another job writes its entry between our read and our write: the 409 makes us re-read and
    # re-apply, so both entries survive.
    def other_job():
        idx = ix.parse(fake.files[BRANCH][f"{FOLDER}/index.json"], "test")
        ix.append(idx, ix.entry_from_record(record(9), sha=sha(9), parent=None))
        fake.put_file(BRANCH, f"{FOLDER}/index.json", idx.dumps())

    fake.fault("PUT", r"/index\.json$", action=other_job)
    store.record_baseline(f"branch:{BRANCH}", record(2), sha=sha(2), parent=sha(1), file=None, client=client)
    puts = fake.calls("PUT", r"/index\.json$")
    assert len(puts) == 4 and "sha" in puts[-1].json  # two first writes, then a 409 and its retry

    before = len(fake.requests)
    idx = store.read_index(f"branch:{BRANCH}", CONFIG, HW, client=client)
    assert len(fake.requests) - before == 1  # a year of history is one read
    assert sorted(e.sha for e in idx.entries) == sorted([sha(0), sha(1), sha(2), sha(9)])
    # Without a hardware key: the branch's only one (one listing more).
    assert store.read_index(f"branch:{BRANCH}", CONFIG, None, client=client).hardware_key == HW

    with pytest.raises(store.NoHistory, match="no history for config 'other'"):
        store.read_index(f"branch:{BRANCH}", "other", HW, client=client)
    fake.put_file(BRANCH, f"{FOLDER}/index.json", b'{"version": 1, "entries": 3}')
    with pytest.raises(store.HistoryError, match=f"branch:{BRANCH}/{FOLDER}/index.json: entries and acks"):
        store.read_index(f"branch:{BRANCH}", CONFIG, HW, client=client)


def test_branch_push_through_the_cli_appends_and_history_reads_it(fake, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("GITHUB_API_URL", fake.url)
    monkeypatch.setenv("GITHUB_REPOSITORY", fake.repo)
    monkeypatch.setenv("GITHUB_TOKEN", fake.token)
    monkeypatch.chdir(tmp_path)
    for i in range(3):
        assert main(["baseline", "push", f"branch:{BRANCH}", str(write_run(tmp_path, record(i))),
                     "--keep-history", "2"]) == 0
    idx = ix.parse(fake.files[BRANCH][f"{FOLDER}/index.json"], "test")
    assert [e.sha for e in idx.entries] == [sha(0), sha(1), sha(2)]
    # The first full record was trimmed from history/: its entry no longer names it.
    assert idx.entries[0].file is None
    assert all(f"{FOLDER}/{e.file}" in fake.files[BRANCH] for e in idx.entries[1:])
    capsys.readouterr()
    assert main(["baseline", "history", "--baseline", f"branch:{BRANCH}", "--config", CONFIG, "--json"]) == 0
    assert [e["sha"] for e in json.loads(capsys.readouterr().out)["entries"]] == [sha(0), sha(1), sha(2)]


# ------------------------------------------------------------------------------------ artifact: store
def test_artifact_store_reads_the_index_inside_the_zip(fake, client, blob_server):  # noqa: F811
    fake.blob_base = blob_server.url_for("").rstrip("/")
    idx = ix.new(CONFIG, HW)
    ix.append(idx, ix.entry_from_record(record(1), sha=sha(1), parent=None))
    other = ix.new("sft", HW)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{FOLDER}/index.json", idx.dumps())
        zf.writestr("sft/index.json", other.dumps())
        zf.writestr("../evil/index.json", b"{}")  # never read: an escaping name
    art = fake.add_artifact("canary-baseline", buf.getvalue(), head_branch="main", created_at="2025-01-02T00:00:00Z")
    blob_server.expect_request(f"/artifact-{art['id']}.zip").respond_with_data(buf.getvalue())
    got = store.read_index("artifact:canary-baseline", CONFIG, None, client=client)
    assert [e.sha for e in got.entries] == [sha(1)]
    with pytest.raises(store.BaselineSpecError, match="read-only"):
        store.update_index("artifact:canary-baseline", CONFIG, HW, lambda i: None, client=client)
