"""Everything the action writes into the workspace can be read and removed by the runner's own user.

GitHub runs a container action as the image's default user, root (a USER instruction would lose access to
the mounted workspace), while the runner process that uploads, checks out and cleans the workspace runs as
another user: uid 1001 on GitHub-hosted runners, any uid on self-hosted ones. Files and directories that
root creates with the usual 0644/0755 modes cannot be deleted by that user, and the next job's checkout
fails on them. So the entrypoint leaves what it created world-readable and writable (directories o+rwx,
files o+rw), without following symlinks and without touching anything that was already there.

The entrypoint runs as tests/action runs it, with the `metrics` input (a synthetic, valid metrics.json:
no training). When the tests run as root (as the action does), another user really reads and deletes the
created files; otherwise the mode bits are asserted alone.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from action.conftest import ActionRunner, pr_event, push_event
from canary_runner import action
from compare.conftest import make_record, write_record

NOBODY = 65534  # the "runner user" of the test: neither root nor the owner of what the action creates
CONFIG = "dpo_embedded"


@pytest.fixture
def root():
    """A test root others can traverse (pytest's tmp_path is 0700), so another user can reach the workspace."""
    path = Path(tempfile.mkdtemp(prefix="canary-modes-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _entries(top: Path) -> dict[Path, os.stat_result]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):  # never follows symlinks
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            out[p] = p.lstat()
    return out


def _fingerprint(st: os.stat_result) -> tuple:
    return st.st_ino, st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns


def _prepare_workspace(ws: Path, outside: Path) -> None:
    """What the runner user has in the workspace before the action runs: a checkout with private files, an
    earlier step's results, the metrics to report on, a baseline, and a symlink that leaves the workspace."""
    (ws / "src").mkdir()
    (ws / "src" / "train.py").write_text("print('hi')\n")
    (ws / "private").mkdir(mode=0o700)
    (ws / "private" / "key").write_text("secret\n")
    (ws / "private" / "key").chmod(0o600)
    (ws / "canary-results" / "old").mkdir(parents=True)
    (ws / "canary-results" / "old" / "report.md").write_text("# an earlier step\n")
    (ws / "canary-results" / "old" / "report.md").chmod(0o640)
    write_record(ws / "inputs", make_record("dpo", seed=1))
    write_record(ws / "baselines" / CONFIG / "cpu-test-2c", make_record("dpo", seed=2))
    (ws / "inputs" / "metrics.json").chmod(0o600)
    outside.write_text("not the action's\n")
    outside.chmod(0o600)
    (ws / "link-out").symlink_to(outside)
    if os.geteuid() == 0:  # the workspace belongs to the runner user, not to the action
        for p in [ws, *_entries(ws)]:
            os.chown(p, NOBODY, NOBODY, follow_symlinks=False)


def _as_nobody(script: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script, "sh", *args], cwd=cwd, user=NOBODY, group=NOBODY, extra_groups=[],
                          capture_output=True, text=True)


def test_what_the_action_writes_is_open_to_the_runner_user(root, fake):
    outside = root / "outside.txt"
    ws = root / "workspace"
    ws.mkdir()
    ws.chmod(0o755)
    _prepare_workspace(ws, outside)
    before = _entries(ws)
    before_outside = _fingerprint(outside.stat())
    run = ActionRunner(root, repo=fake.repo, token=fake.token, api_url=fake.url)

    # A pull request reported from a downloaded metrics.json against a path baseline, then the default
    # branch storing a new baseline in a directory the action creates.
    pr = run(event_name="pull_request", event=pr_event(fake.repo),
             inputs={"metrics": "inputs/metrics.json", "baseline": "path:baselines", "fail-on": "never"})
    assert pr.returncode == 0, pr.log
    stored = run(event_name="push", event=push_event(fake.repo),
               inputs={"metrics": "inputs/metrics.json", "baseline": "path:store", "mode": "update-baseline"})
    assert stored.returncode == 0, stored.log

    after = _entries(ws)
    created = {p: st for p, st in after.items() if p not in before or after[p].st_ino != before[p].st_ino}
    names = {p.relative_to(ws).as_posix() for p in created}
    # Not vacuous: the report, the comparison, the fetched baseline and the stored one are all there.
    assert {f"canary-results/{CONFIG}", f"canary-results/{CONFIG}/report.md",
            f"canary-results/{CONFIG}/comparison.json", "store"} <= names, sorted(names)
    assert any(n.startswith(f"canary-results/{CONFIG}/baseline/") for n in names), sorted(names)
    assert any(n.startswith(f"store/{CONFIG}/") and n.endswith("metrics.json") for n in names), sorted(names)

    closed = []
    for p, st in created.items():
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o007 != 0o007:
            closed.append(f"{p.relative_to(ws)}/ {stat.filemode(st.st_mode)}")
        elif stat.S_ISREG(st.st_mode) and st.st_mode & 0o006 != 0o006:
            closed.append(f"{p.relative_to(ws)} {stat.filemode(st.st_mode)}")
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID) or stat.S_ISDIR(st.st_mode), p
    assert not closed, "created paths the runner user cannot read or remove:\n" + "\n".join(sorted(closed))

    # What was there before is exactly as it was (owner, mode, inode, size, time), and so is the file
    # behind the symlink.
    def same(a: os.stat_result, b: os.stat_result) -> bool:  # a directory's time moves as entries come and go
        return _fingerprint(a) == _fingerprint(b) if not stat.S_ISDIR(a.st_mode) else \
            (a.st_ino, a.st_mode, a.st_uid) == (b.st_ino, b.st_mode, b.st_uid)
    changed = [str(p.relative_to(ws)) for p, st in before.items() if p not in after or not same(after[p], st)]
    assert not changed, f"pre-existing paths changed: {changed}"
    assert _fingerprint(outside.stat()) == before_outside

    if os.geteuid() == 0:
        # The runner user really reads every created file and deletes every created path.
        files = [str(p) for p, st in created.items() if stat.S_ISREG(st.st_mode)]
        proc = _as_nobody('cat "$@" > /dev/null', ws, *files)
        assert proc.returncode == 0, proc.stderr
        proc = _as_nobody(f"rm -rf canary-results/{CONFIG} store", ws)
        assert proc.returncode == 0, proc.stderr
        assert not (ws / "canary-results" / CONFIG).exists() and not (ws / "store").exists()


def test_the_walk_never_follows_symlinks_nor_opens_up_old_files(tmp_path):
    """The helper itself: a symlink created during the run, to a private file outside the workspace and to a
    private directory inside it, is left alone, as is everything the snapshot saw."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "old.txt").write_text("old")
    (ws / "old.txt").chmod(0o600)
    (ws / "olddir").mkdir(mode=0o700)
    target = tmp_path / "outside.txt"
    target.write_text("x")
    target.chmod(0o600)
    seen = action._snapshot(ws)

    (ws / "new").mkdir(mode=0o700)
    (ws / "new" / "f").write_text("f")
    (ws / "new" / "f").chmod(0o600)
    (ws / "new" / "x").write_text("#!/bin/sh\n")
    (ws / "new" / "x").chmod(0o700)
    (ws / "new" / "to-outside").symlink_to(target)
    (ws / "new" / "to-olddir").symlink_to(ws / "olddir")
    (ws / "olddir" / "inner").write_text("i")
    (ws / "olddir" / "inner").chmod(0o600)
    (ws / "old.txt").write_text("rewritten in place")  # same inode: still not the action's file

    action._open_up(ws, seen)

    assert stat.S_IMODE((ws / "new").stat().st_mode) == 0o777
    assert stat.S_IMODE((ws / "new" / "f").stat().st_mode) == 0o666
    assert stat.S_IMODE((ws / "new" / "x").stat().st_mode) == 0o777
    assert stat.S_IMODE((ws / "olddir" / "inner").stat().st_mode) == 0o666
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE((ws / "olddir").stat().st_mode) == 0o700
    assert stat.S_IMODE((ws / "old.txt").stat().st_mode) == 0o600
