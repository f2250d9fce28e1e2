"""`canary baseline pull|push|show` against the fake GitHub (every request validated) and local paths."""

from __future__ import annotations

import json

import pytest

from canary_runner.cli import main

BRANCH = "canary-baselines"


def metrics(config="dpo_embedded", hw="nvidia-h100-x1", step_time=0.1, sha="c0ffee" * 6 + "abcd", status="completed"):
    return json.dumps({"schema_version": 1, "status": status,
                       "run": {"config_name": config, "git_sha": sha, "steps_completed": 30,
                               "started_at": "2025-01-01T00:00:00Z"},
                       "env": {"hardware_key": hw},
                       "summary": {"step_time_s": {"median": step_time}},
                       "series": {"step": list(range(1, 31))}}).encode()


@pytest.fixture
def gh_env(fake, monkeypatch):
    monkeypatch.setenv("GITHUB_API_URL", fake.url)
    monkeypatch.setenv("GITHUB_REPOSITORY", fake.repo)
    monkeypatch.setenv("GITHUB_TOKEN", fake.token)
    monkeypatch.delenv("GH_TOKEN", raising=False)
    return fake


def test_push_then_pull_then_show_on_a_branch(gh_env, tmp_path, capsys):
    fake = gh_env
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_bytes(metrics())
    assert main(["baseline", "push", f"branch:{BRANCH}", str(run)]) == 0
    out = capsys.readouterr()
    assert f"created branch '{BRANCH}'" in out.out and fake.token not in out.out + out.err
    assert fake.files[BRANCH]["dpo_embedded/nvidia-h100-x1/metrics.json"] == metrics()

    dest = tmp_path / "pulled"
    assert main(["baseline", "pull", f"branch:{BRANCH}", "--metrics", str(run), "-o", str(dest)]) == 0
    assert (dest / "metrics.json").read_bytes() == metrics()

    assert main(["baseline", "show", f"branch:{BRANCH}", "--config", "dpo_embedded"]) == 0
    shown = capsys.readouterr().out
    assert "hardware nvidia-h100-x1" in shown and "100.0 ms/step" in shown

    assert main(["baseline", "show", f"branch:{BRANCH}", "--config", "dpo_embedded", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["found"] and data[0]["runs"][0]["git_sha"].startswith("c0ffee")


def test_push_retries_a_409_conflict(gh_env, tmp_path, capsys):
    fake = gh_env
    path = "dpo_embedded/nvidia-h100-x1/metrics.json"
    fake.put_file(BRANCH, path, metrics(step_time=0.5))
    fake.fault("PUT", r"/metrics\.json$", action=lambda: fake.put_file(BRANCH, path, metrics(step_time=0.7)))
    run = tmp_path / "metrics.json"
    run.write_bytes(metrics(step_time=0.2))
    assert main(["baseline", "push", f"branch:{BRANCH}", str(run), "--sha", "e" * 40]) == 0
    assert "1 conflicting write(s) retried" in capsys.readouterr().out
    assert fake.files[BRANCH][path] == metrics(step_time=0.2)


def test_pull_with_no_baseline_says_so_and_writes_nothing(gh_env, tmp_path, capsys):
    dest = tmp_path / "pulled"
    assert main(["baseline", "pull", f"branch:{BRANCH}", "--config", "dpo_embedded", "--hardware", "cpu-x-2c",
                 "-o", str(dest)]) == 0
    assert "does not exist" in capsys.readouterr().err
    assert not dest.exists()


def test_push_needs_a_token_and_a_completed_run(gh_env, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GITHUB_TOKEN")
    run = tmp_path / "metrics.json"
    run.write_bytes(metrics())
    assert main(["baseline", "push", f"branch:{BRANCH}", str(run)]) == 2
    assert "needs a token" in capsys.readouterr().err
    run.write_bytes(metrics(status="crashed"))
    assert main(["baseline", "push", f"branch:{BRANCH}", str(run), "--token", "x"]) == 2
    assert "only completed runs" in capsys.readouterr().err
    assert gh_env.calls("PUT", "/contents/") == []


def test_artifact_push_explains_upload_artifact(tmp_path, capsys):
    run = tmp_path / "metrics.json"
    run.write_bytes(metrics())
    assert main(["baseline", "push", "artifact:canary-baseline", str(run), "--repo", "o/r"]) == 2
    assert "actions/upload-artifact" in capsys.readouterr().err


def test_path_push_pull_show_keep_a_bounded_history(tmp_path, capsys):
    store = tmp_path / "store"
    run = tmp_path / "metrics.json"
    for i in range(4):
        run.write_bytes(metrics(step_time=0.1 * (i + 1), sha=f"{i}" * 40))
        assert main(["baseline", "push", f"path:{store}", str(run), "--keep-history", "2"]) == 0
    folder = store / "dpo_embedded" / "nvidia-h100-x1"
    assert (folder / "metrics.json").read_bytes() == run.read_bytes()
    assert len(list((folder / "history").glob("*.json"))) == 2
    dest = tmp_path / "pulled"
    assert main(["baseline", "pull", f"path:{store}", "--config", "dpo_embedded", "--hardware", "nvidia-h100-x1",
                 "-o", str(dest), "--history", "5"]) == 0
    assert (dest / "metrics.json").read_bytes() == run.read_bytes()
    capsys.readouterr()
    assert main(["baseline", "show", f"path:{store}", "--config", "dpo_embedded"]) == 0
    assert "400.0 ms/step" in capsys.readouterr().out


def test_bad_specs_and_missing_keys_are_usage_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    assert main(["baseline", "show", "ftp:somewhere", "--config", "x"]) == 2
    assert "unknown baseline source" in capsys.readouterr().err
    assert main(["baseline", "show", f"path:{tmp_path}"]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["baseline", "pull", f"branch:{BRANCH}", "--config", "x", "--hardware", "h", "-o", str(tmp_path),
                 "--repo", ""]) == 2


def test_pull_never_writes_through_a_symlink(tmp_path, capsys):
    store = tmp_path / "store"
    run = tmp_path / "metrics.json"
    for i in range(2):
        run.write_bytes(metrics(step_time=0.1 * (i + 1), sha=f"{i}" * 40))
        assert main(["baseline", "push", f"path:{store}", str(run)]) == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    dest = tmp_path / "pulled"
    dest.mkdir()
    (dest / "metrics.json").symlink_to(victim)  # planted where the pull writes
    key = ["--config", "dpo_embedded", "--hardware", "nvidia-h100-x1"]
    assert main(["baseline", "pull", f"path:{store}", *key, "-o", str(dest)]) == 0
    assert victim.read_text() == "keep"
    assert not (dest / "metrics.json").is_symlink() and (dest / "metrics.json").read_bytes() == run.read_bytes()
    # A history/ that is a symlink is refused, not written into.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (dest / "history").symlink_to(elsewhere)
    capsys.readouterr()
    assert main(["baseline", "pull", f"path:{store}", *key, "-o", str(dest), "--history", "5"]) == 3
    assert "through the symlink" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []
    # -o naming a file is a usage error, not a traceback.
    assert main(["baseline", "pull", f"path:{store}", *key, "-o", str(victim)]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_push_refuses_a_run_without_steps(tmp_path, capsys):
    run = tmp_path / "metrics.json"
    record = json.loads(metrics())
    record["series"]["step"] = []
    run.write_text(json.dumps(record))
    assert main(["baseline", "push", f"path:{tmp_path / 'store'}", str(run)]) == 2
    assert "without recording a single step" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()
