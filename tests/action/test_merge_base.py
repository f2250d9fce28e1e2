"""The right baseline for a pull request, with a branchy history in a real git repository.

    m1 - m2 - m3 - m4          main (each with a record in the store)
          \\         \\
           p1        x1        the PR (branched from m2) and another branch (never merged)

The PR gets m2's record (its merge base), or the newest ancestor's (m1) when m2 has none; never m3,
m4 (main moved on after the PR branched) nor x1 (not an ancestor). Both ways of knowing ancestry
are covered: local git (a full checkout) and GitHub's compare API (a shallow one), the latter
through the fake GitHub, which validates each request against GitHub's OpenAPI description.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from github.conftest import client, sleeps  # noqa: F401

from canary_runner.history import index as ix
from canary_runner.history import mergebase, store

from .conftest import pr_event

CONFIG = "dpo_embedded"
HW = "nvidia-h100-x1"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def branchy_repo(repo: Path) -> dict[str, str]:
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main", ".")
    shas = {}

    def commit(name: str) -> None:
        (repo / "log.txt").write_text((repo / "log.txt").read_text() + name + "\n" if (repo / "log.txt").exists()
                                      else name + "\n")
        git(repo, "add", "log.txt")
        git(repo, "commit", "-q", "-m", name)
        shas[name] = git(repo, "rev-parse", "HEAD")

    commit("m1")
    commit("m2")
    git(repo, "checkout", "-q", "-b", "feature")
    commit("p1")
    git(repo, "checkout", "-q", "main")
    commit("m3")
    git(repo, "checkout", "-q", "-b", "other")
    commit("x1")
    git(repo, "checkout", "-q", "main")
    commit("m4")
    return shas


def record(sha: str, step_time: float = 0.1, hw: str = HW, ended: datetime | None = None) -> dict:
    return {"schema_version": 1, "status": "completed",
            "run": {"config_name": CONFIG, "git_sha": sha, "steps_completed": 8,
                    "ended_at": (ended or datetime.now(timezone.utc)).isoformat()},
            "env": {"hardware_key": hw}, "summary": {"step_time_s": {"median": step_time}},
            "series": {"step": list(range(1, 9))}}


def entries(shas: dict[str, str], names: list[str]) -> list[ix.Entry]:
    """Index entries for `names`, in that order (oldest first), each naming its history file."""
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    return [ix.entry_from_record(record(shas[n]), sha=shas[n], parent=None, file=f"history/{i:02d}-{n}.json",
                                 timestamp=(t0 + timedelta(hours=i)).isoformat()) for i, n in enumerate(names)]


ALL = ["m1", "m2", "m3", "x1", "m4"]  # x1's record is newer than m3's: a newest-record pick could take it


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("branchy") / "repo"
    return root, branchy_repo(root)


@pytest.fixture(scope="module")
def shallow(repo, tmp_path_factory) -> Path:
    """A depth-1 clone of the PR's head, as actions/checkout makes by default."""
    root, _ = repo
    dest = tmp_path_factory.mktemp("shallow") / "ws"
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "feature", f"file://{root}", str(dest)],
                   check=True, capture_output=True)
    return dest


def graph(root: Path) -> dict[str, list[str]]:
    lines = git(root, "rev-list", "--all", "--parents").splitlines()
    return {ln.split()[0]: ln.split()[1:] for ln in lines}


# ------------------------------------------------------------------------------------ local git
def test_local_git_picks_the_merge_base_record_never_a_later_or_foreign_one(repo):
    root, shas = repo
    pick = mergebase.select_for_pull_request(entries(shas, ALL), base=shas["m4"], head=shas["p1"], repo=root)
    assert (pick.entry.sha, pick.distance, pick.via, pick.merge_base) == (shas["m2"], 0, "git", shas["m2"])
    assert pick.text == f"baseline: {shas['m2'][:12]}, the merge base"

    # No record for m2: the newest ancestor that has one (m1, one commit before), never m3, x1 or m4.
    pick = mergebase.select_for_pull_request(entries(shas, ["m1", "m3", "x1", "m4"]), base=shas["m4"],
                                             head=shas["p1"], repo=root)
    assert (pick.entry.sha, pick.distance) == (shas["m1"], 1)
    assert pick.text == f"baseline: {shas['m1'][:12]}, 1 commit before the merge base {shas['m2'][:12]}"

    # Only records of commits the PR does not contain: no baseline at all, said so.
    pick = mergebase.select_for_pull_request(entries(shas, ["m3", "x1", "m4"]), base=shas["m4"], head=shas["p1"],
                                             repo=root)
    assert pick.entry is None and "no baseline" in pick.text and pick.merge_base == shas["m2"]

    # A PR branched from m4 (main's head) gets m4's record, not x1's (newest of all but not an ancestor).
    pick = mergebase.select_for_pull_request(entries(shas, ["m1", "m4", "x1"]), base=shas["m4"], head=shas["m4"],
                                             repo=root)
    assert pick.entry.sha == shas["m4"]


def test_a_trimmed_record_is_skipped_and_said(repo):
    root, shas = repo
    es = entries(shas, ALL)
    pick = mergebase.select_for_pull_request(es, base=shas["m4"], head=shas["p1"], repo=root,
                                             has_record=lambda e: e.sha != shas["m2"])
    assert pick.entry.sha == shas["m1"] and "trimmed" in pick.text


# ------------------------------------------------------------------------------------ compare API
def test_a_shallow_checkout_asks_the_compare_api(repo, shallow, fake, client):  # noqa: F811
    root, shas = repo
    assert mergebase.local_merge_base(shallow, shas["m4"], shas["p1"]) is None  # the history is not there
    fake.add_commits(graph(root))

    pick = mergebase.select_for_pull_request(entries(shas, ALL), base=shas["m4"], head=shas["p1"], repo=shallow,
                                             client=client)
    assert (pick.entry.sha, pick.distance, pick.via) == (shas["m2"], 0, "compare-api")
    assert len(fake.calls("GET", "/compare/")) == 1  # the merge base's record: one call

    fake.requests.clear()
    pick = mergebase.select_for_pull_request(entries(shas, ["m1", "m3", "x1", "m4"]), base=shas["m4"],
                                             head=shas["p1"], repo=shallow, client=client)
    assert (pick.entry.sha, pick.distance) == (shas["m1"], 1)
    compares = [r.path.rsplit("/", 1)[1] for r in fake.calls("GET", "/compare/")]
    # base...head, then merge base...newest record (its commits are not ancestors: m3, m4 skipped
    # free), then x1 (not listed: another branch) and m1, one call each.
    assert compares[0] == f"{shas['m4']}...{shas['p1']}" and len(compares) <= 4, compares

    pick = mergebase.select_for_pull_request(entries(shas, ["m3", "x1", "m4"]), base=shas["m4"], head=shas["p1"],
                                             repo=shallow, client=client)
    assert pick.entry is None


def test_a_record_github_does_not_know_is_not_an_ancestor(repo, shallow, fake, client):  # noqa: F811
    root, shas = repo
    fake.add_commits(graph(root))
    es = entries(shas, ["m1", "m3"])
    es.append(ix.Entry(sha="f" * 40, parent=None, timestamp="2026-01-01T00:00:00+00:00", values={},
                       file="history/gone.json"))  # newest, of a history rewritten since: compare answers 404
    pick = mergebase.select_for_pull_request(es, base=shas["m4"], head=shas["p1"], repo=shallow, client=client)
    assert (pick.entry.sha, pick.distance) == (shas["m1"], 1)
    assert any(r.path.endswith(f"{shas['m2']}...{'f' * 40}") for r in fake.calls("GET", "/compare/"))


def test_compare_api_calls_are_bounded(repo, fake, client, tmp_path):  # noqa: F811
    root, shas = repo
    fake.add_commits(graph(root))
    # Many records of commits on no branch the PR knows (e.g. a rewritten main): at most the bound.
    foreign = {f"{i:040x}": [] for i in range(1, 40)}
    fake.add_commits(foreign)
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    es = [ix.Entry(sha=s, parent=None, timestamp=(t0 + timedelta(hours=i)).isoformat(), values={},
                   file=f"history/{i}.json") for i, s in enumerate(foreign)]
    pick = mergebase.select_for_pull_request(es, base=shas["m4"], head=shas["p1"], repo=tmp_path, client=client)
    assert pick.entry is None
    assert len(fake.calls("GET", "/compare/")) <= 2 + mergebase.MAX_API_LOOKUPS


# ------------------------------------------------------------------------------------ the action
def write_store(ws: Path, seed: Path, shas: dict[str, str], names: list[str], hw: str) -> Path:
    """A path: store in the workspace: a full record per commit (the seed run, its git_sha set) and
    the index, x1's newest; metrics.json is the newest record, as after pushes in that order."""
    root = ws / "baselines"
    seed_doc = json.loads(seed.read_text())
    t0 = datetime.now(timezone.utc) - timedelta(days=1)
    for i, name in enumerate(names):
        doc = json.loads(json.dumps(seed_doc))
        doc["run"]["git_sha"] = shas[name]
        doc["run"]["ended_at"] = (t0 + timedelta(hours=i)).isoformat()
        folder = root / CONFIG / hw
        (folder / "history").mkdir(parents=True, exist_ok=True)
        raw = json.dumps(doc).encode()
        (folder / "history" / f"{i:02d}-{shas[name][:12]}.json").write_bytes(raw)
        (folder / "metrics.json").write_bytes(raw)
        store.record_baseline(f"path:{root}", doc, sha=shas[name], parent=None,
                              file=f"history/{i:02d}-{shas[name][:12]}.json")
    return root


def pr_event_for(repo_name: str, base: str, head: str) -> dict:
    event = pr_event(repo_name)
    event["pull_request"]["base"]["sha"] = base
    event["pull_request"]["head"]["sha"] = head
    return event


def test_action_pr_gets_the_merge_base_record_from_a_full_checkout(run_action, fake, seed_run):
    ws = run_action.workspace
    shas = branchy_repo(ws)
    git(ws, "checkout", "-q", "feature")
    hw = json.loads(seed_run.read_text())["env"]["hardware_key"]
    write_store(ws, seed_run, shas, ALL, hw)
    result = run_action(event_name="pull_request", event=pr_event_for(fake.repo, shas["m4"], shas["p1"]),
                        inputs={"metrics": str(seed_run), "baseline": "path:baselines"})
    assert result.returncode == 0, result.log
    doc = json.loads(result.path("comparison-path").read_text())
    assert doc["baseline"]["git_sha"] == shas["m2"]
    assert doc["baseline_selection"] == {"method": "merge-base", "via": "git", "commit": shas["m2"],
                                         "merge_base": shas["m2"], "distance": 0,
                                         "text": f"baseline: {shas['m2'][:12]}, the merge base"}
    assert f"baseline: {shas['m2'][:12]}, the merge base" in result.path("report-path").read_text()
    assert not fake.calls("GET", "/compare/")  # local git answered


def test_action_pr_on_a_shallow_checkout_asks_github_and_takes_an_ancestor(run_action, fake, seed_run, repo):
    root, shas = repo
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "feature", f"file://{root}",
                    str(run_action.workspace)], check=True, capture_output=True)
    fake.add_commits(graph(root))
    hw = json.loads(seed_run.read_text())["env"]["hardware_key"]
    write_store(run_action.workspace, seed_run, shas, ["m1", "m3", "x1", "m4"], hw)  # no record for m2
    result = run_action(event_name="pull_request", event=pr_event_for(fake.repo, shas["m4"], shas["p1"]),
                        inputs={"metrics": str(seed_run), "baseline": "path:baselines"})
    assert result.returncode == 0, result.log
    doc = json.loads(result.path("comparison-path").read_text())
    sel = doc["baseline_selection"]
    assert (sel["commit"], sel["distance"], sel["via"]) == (shas["m1"], 1, "compare-api")
    assert doc["baseline"]["git_sha"] == shas["m1"]
    assert "1 commit before the merge base" in result.path("report-path").read_text()


def test_action_without_an_index_uses_the_newest_record_and_says_so(run_action, fake, seed_run):
    hw = json.loads(seed_run.read_text())["env"]["hardware_key"]
    folder = run_action.workspace / "baselines" / CONFIG / hw
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_bytes(seed_run.read_bytes())
    result = run_action(event_name="pull_request", event=pr_event_for(fake.repo, "3" * 40, "1" * 40),
                        inputs={"metrics": str(seed_run), "baseline": "path:baselines"})
    assert result.returncode == 0, result.log
    doc = json.loads(result.path("comparison-path").read_text())
    assert doc["baseline_selection"]["method"] == "newest"
    assert "no history index" in result.path("report-path").read_text()


def test_action_update_baseline_appends_the_index(run_action, fake, seed_run):
    from .conftest import push_event

    ws = run_action.workspace
    git(ws, "init", "-q", "-b", "main", ".")
    git(ws, "commit", "-q", "--allow-empty", "-m", "m0")
    git(ws, "commit", "-q", "--allow-empty", "-m", "m1")
    head, parent = git(ws, "rev-parse", "HEAD"), git(ws, "rev-parse", "HEAD^")
    result = run_action(event_name="push", event=push_event(fake.repo), env={"GITHUB_SHA": head},
                        inputs={"metrics": str(seed_run), "mode": "update-baseline", "baseline": "path:baselines"})
    assert result.returncode == 0, result.log
    hw = json.loads(seed_run.read_text())["env"]["hardware_key"]
    idx = store.read_index("path:baselines", CONFIG, None, workspace=ws)
    (entry,) = idx.entries
    assert (entry.sha, entry.parent, idx.hardware_key) == (head, parent, hw)
    assert entry.timestamp == json.loads(seed_run.read_text())["run"]["ended_at"]
    assert (ws / "baselines" / CONFIG / hw / entry.file).read_bytes() == seed_run.read_bytes()
    assert "History: 1 commit(s)" in result.summary


def test_action_pr_with_a_branch_store_reads_the_chosen_history_file(run_action, fake, seed_run, repo):
    """The default store (branch:canary-baselines) and no checkout history: one index read, the
    compare API, then the chosen record's history file."""
    root, shas = repo
    fake.add_commits(graph(root))
    hw = json.loads(seed_run.read_text())["env"]["hardware_key"]
    folder = f"{CONFIG}/{hw}"
    idx = ix.new(CONFIG, hw)
    t0 = datetime.now(timezone.utc) - timedelta(days=1)
    for i, name in enumerate(ALL):
        doc = json.loads(seed_run.read_text())
        doc["run"]["git_sha"] = shas[name]
        raw = json.dumps(doc).encode()
        fake.put_file("canary-baselines", f"{folder}/history/{i:02d}-{shas[name][:12]}.json", raw)
        fake.put_file("canary-baselines", f"{folder}/metrics.json", raw)
        ix.append(idx, ix.entry_from_record(doc, sha=shas[name], parent=None, timestamp=(t0 + timedelta(hours=i))
                                            .isoformat(), file=f"history/{i:02d}-{shas[name][:12]}.json"))
    fake.put_file("canary-baselines", f"{folder}/index.json", idx.dumps())
    result = run_action(event_name="pull_request", event=pr_event_for(fake.repo, shas["m4"], shas["p1"]),
                        inputs={"metrics": str(seed_run)})
    assert result.returncode == 0, result.log
    doc = json.loads(result.path("comparison-path").read_text())
    assert doc["baseline"]["git_sha"] == shas["m2"]
    assert doc["baseline_selection"]["via"] == "compare-api" and doc["baseline_selection"]["distance"] == 0
    reads = [r.path for r in fake.calls("GET", "/contents/")]
    assert reads == [f"/repos/{fake.repo}/contents/{folder}/index.json",
                     f"/repos/{fake.repo}/contents/{folder}/history/01-{shas['m2'][:12]}.json"]
