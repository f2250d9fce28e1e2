from __future__ import annotations

import io
import json
import re
import zipfile

import pytest

from canary_runner.baselines import (
    ArtifactSpec,
    BaselineError,
    BaselineSpecError,
    BranchSpec,
    PathSpec,
    load_baseline,
    parse_baseline_spec,
    read_zip_metrics,
    write_branch_baseline,
)

from .fakegithub import git_sha

BRANCH = "canary-baselines"


def metrics(config="sft-tiny", hw="nvidia-h100-80gb", step_time=0.1, sha="c0ffee"):
    return json.dumps({"schema_version": 1, "run": {"config_name": config, "git_sha": sha},
                       "env": {"hardware_key": hw}, "summary": {"step_time_median_s": step_time}}).encode()


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- specs
@pytest.mark.parametrize("text, expected", [
    ("branch:canary-baselines", BranchSpec("canary-baselines")),
    ("branch:team/perf", BranchSpec("team/perf")),
    ("artifact:canary-baseline", ArtifactSpec("canary-baseline")),
    (" path:./baselines ", PathSpec(__import__("pathlib").Path("baselines"))),
])
def test_parse_good_specs(text, expected):
    assert parse_baseline_spec(text) == expected
    assert str(parse_baseline_spec(str(expected))) == str(expected)


@pytest.mark.parametrize("text, words", [
    ("canary-baselines", "no kind"),
    ("branch:", "empty"),
    ("git:main", "unknown baseline source"),
    ("branch:bad..name", "invalid branch"),
    ("branch:has space", "invalid branch"),
    ("branch:-x", "invalid branch"),
    ("artifact:a/b", "invalid artifact"),
])
def test_parse_bad_specs(text, words):
    with pytest.raises(BaselineSpecError, match=words) as err:
        parse_baseline_spec(text)
    assert isinstance(err.value, ValueError)


# -------------------------------------------------------------------------------------------- path
def test_path_source_both_layouts_and_hardware_mismatch(tmp_path):
    (tmp_path / "sft-tiny" / "nvidia-h100-80gb").mkdir(parents=True)
    (tmp_path / "sft-tiny" / "nvidia-h100-80gb" / "metrics.json").write_bytes(metrics())
    (tmp_path / "sft-tiny" / "nvidia-l4").mkdir()
    (tmp_path / "sft-tiny" / "nvidia-l4" / "metrics.json").write_bytes(metrics(hw="nvidia-l4"))
    found = load_baseline(f"path:{tmp_path}", config_name="sft-tiny", hardware_key="nvidia-h100-80gb")
    assert found.found and found.latest.hardware_key == "nvidia-h100-80gb"
    missing = load_baseline(f"path:{tmp_path}", config_name="sft-tiny", hardware_key="nvidia-a100-40gb")
    assert not missing.found
    assert missing.message.startswith("no baseline for hardware nvidia-a100-40gb (found: nvidia-h100-80gb, nvidia-l4)")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "metrics.json").write_bytes(metrics(config="dpo-tiny"))
    assert load_baseline(f"path:{flat}", config_name="dpo-tiny", hardware_key="nvidia-h100-80gb").found
    assert "found configs: dpo-tiny" in load_baseline(f"path:{flat}", config_name="sft-tiny",
                                                      hardware_key="nvidia-h100-80gb").message
    assert load_baseline(f"path:{flat / 'metrics.json'}", config_name="dpo-tiny",
                         hardware_key="nvidia-h100-80gb").found
    gone = load_baseline(f"path:{tmp_path / 'nope'}", config_name="x", hardware_key="y")
    assert not gone.found and "does not exist" in gone.message
    (flat / "metrics.json").write_text("{broken")
    with pytest.raises(BaselineError, match="not valid JSON"):
        load_baseline(f"path:{flat}", config_name="dpo-tiny", hardware_key="h")


# ------------------------------------------------------------------------------------------ branch
def test_branch_read_with_history(fake, client):
    fake.put_file(BRANCH, "sft-tiny/nvidia-h100-80gb/metrics.json", metrics(step_time=0.3))
    for i, t in enumerate([0.1, 0.2, 0.3]):
        fake.put_file(BRANCH, f"sft-tiny/nvidia-h100-80gb/history/2025010{i + 1}T000000Z-abc{i}.json",
                      metrics(step_time=t))
    lookup = load_baseline("branch:canary-baselines", client=client, config_name="sft-tiny",
                           hardware_key="nvidia-h100-80gb", history=10)
    assert lookup.found
    # The newest history entry equals metrics.json and is not counted twice.
    assert [r.metrics["summary"]["step_time_median_s"] for r in lookup.runs] == [0.3, 0.2, 0.1]
    assert lookup.latest.origin == "branch:canary-baselines/sft-tiny/nvidia-h100-80gb/metrics.json"


def test_branch_hardware_mismatch_and_missing_branch(fake, client):
    fake.put_file(BRANCH, "sft-tiny/nvidia-h100-80gb/metrics.json", metrics())
    fake.put_file(BRANCH, "sft-tiny/nvidia-l4/metrics.json", metrics(hw="nvidia-l4"))
    lookup = load_baseline("branch:canary-baselines", client=client, config_name="sft-tiny",
                           hardware_key="nvidia-a100-40gb")
    assert not lookup.found and lookup.available_hardware == ("nvidia-h100-80gb", "nvidia-l4")
    assert lookup.message.startswith("no baseline for hardware nvidia-a100-40gb (found: nvidia-h100-80gb, nvidia-l4)")
    other = load_baseline("branch:canary-baselines", client=client, config_name="ppo-tiny", hardware_key="x")
    assert not other.found and "no baseline for config 'ppo-tiny'" in other.message
    nobranch = load_baseline("branch:never-written", client=client, config_name="sft-tiny", hardware_key="x")
    assert not nobranch.found and "branch 'never-written' does not exist" in nobranch.message


def test_branch_file_filed_under_the_wrong_hardware_is_not_used(fake, client):
    fake.put_file(BRANCH, "sft-tiny/nvidia-h100-80gb/metrics.json", metrics(hw="nvidia-a100-40gb"))
    lookup = load_baseline("branch:canary-baselines", client=client, config_name="sft-tiny",
                           hardware_key="nvidia-h100-80gb")
    assert not lookup.found and "found: nvidia-a100-40gb" in lookup.message


def test_branch_write_creates_the_branch_from_the_default_branch(fake, client):
    result = write_branch_baseline(client, BRANCH, metrics(), commit_sha="d" * 40, timestamp="20250105T000000Z")
    assert result.created_branch and result.commit_sha
    assert fake.files[BRANCH]["sft-tiny/nvidia-h100-80gb/metrics.json"] == metrics()
    assert f"sft-tiny/nvidia-h100-80gb/history/20250105T000000Z-{'d' * 12}.json" in fake.files[BRANCH]
    assert fake.calls("POST", "/git/refs")[0].json == {"ref": f"refs/heads/{BRANCH}", "sha": fake.refs["main"]}
    assert "[skip ci]" in fake.calls("PUT", "/contents/")[0].json["message"]


def test_branch_write_retries_after_a_409_conflict(fake, client):
    path = "sft-tiny/nvidia-h100-80gb/metrics.json"
    fake.put_file(BRANCH, path, metrics(step_time=0.5))
    # Another job commits between our read of the sha and our PUT: GitHub answers 409.
    fake.fault("PUT", r"/metrics\.json$", action=lambda: fake.put_file(BRANCH, path, metrics(step_time=0.7)))
    new = metrics(step_time=0.2)
    result = write_branch_baseline(client, BRANCH, new, commit_sha="e" * 40, timestamp="20250106T000000Z")
    assert result.conflicts == 1 and not result.created_branch
    puts = fake.calls("PUT", r"/metrics\.json$")
    assert len(puts) == 2 and puts[0].json["sha"] == git_sha(metrics(step_time=0.5))
    assert puts[1].json["sha"] == git_sha(metrics(step_time=0.7))
    assert fake.files[BRANCH][path] == new


def test_branch_write_gives_up_after_bounded_conflicts(fake, client):
    path = "sft-tiny/nvidia-h100-80gb/metrics.json"
    fake.put_file(BRANCH, path, metrics())
    fake.fault("PUT", r"/metrics\.json$", status=409, body={"message": "is at x but expected y"}, times=10)
    with pytest.raises(BaselineError, match="kept conflicting after 3 attempts"):
        write_branch_baseline(client, BRANCH, metrics(step_time=1.0), commit_sha="f" * 40)


def test_branch_write_trims_history_to_the_newest(fake, client):
    folder = "sft-tiny/nvidia-h100-80gb"
    for day in range(1, 6):
        fake.put_file(BRANCH, f"{folder}/history/2025010{day}T000000Z-{day:012d}.json", metrics(step_time=day / 10))
    result = write_branch_baseline(client, BRANCH, metrics(step_time=0.9), commit_sha="9" * 40,
                                   timestamp="20250109T000000Z", keep_history=3)
    history = sorted(p.rsplit("/", 1)[1] for p in fake.files[BRANCH] if "/history/" in p)
    assert history == ["20250104T000000Z-000000000004.json", "20250105T000000Z-000000000005.json",
                       f"20250109T000000Z-{'9' * 12}.json"]
    assert len(result.trimmed) == 3 and all("2025010" in p for p in result.trimmed)
    assert all(r.json["sha"] for r in fake.calls("DELETE", "/contents/"))


def test_branch_write_refused_is_a_clear_error(fake, client):
    fake.denied.add("contents")
    fake.refs[BRANCH] = fake.refs["main"]
    with pytest.raises(BaselineError, match="contents: write"):
        write_branch_baseline(client, BRANCH, metrics(), commit_sha="1" * 40)


def test_branch_write_needs_the_keys_inside_the_file(client):
    with pytest.raises(BaselineError, match="hardware_key"):
        write_branch_baseline(client, BRANCH, b'{"run": {"config_name": "x"}}', commit_sha="1" * 40)


# ---------------------------------------------------------------------------------------- artifact
def test_artifact_newest_non_expired_on_default_branch(fake, client, blob_server):
    fake.blob_base = blob_server.url_for("").rstrip("/")
    h100, l4 = metrics(step_time=0.11), metrics(hw="nvidia-l4", step_time=0.4)
    old = fake.add_artifact("canary-baseline", zip_of({"metrics.json": metrics(step_time=9.0)}),
                            head_branch="main", created_at="2025-01-01T00:00:00Z")
    good = fake.add_artifact("canary-baseline", zip_of({"sft-tiny/nvidia-h100-80gb/metrics.json": h100,
                                                        "sft-tiny/nvidia-l4/metrics.json": l4,
                                                        "report.md": b"# not a baseline"}),
                             head_branch="main", created_at="2025-01-03T00:00:00Z")
    fake.add_artifact("canary-baseline", zip_of({"metrics.json": metrics(step_time=5.0)}),
                      head_branch="main", created_at="2025-01-04T00:00:00Z", expired=True)
    fake.add_artifact("canary-baseline", zip_of({"metrics.json": metrics(step_time=7.0)}),
                      head_branch="feature/x", created_at="2025-01-05T00:00:00Z")
    for i in range(120):  # other names: the list is filtered by name and paginated
        fake.add_artifact(f"other-{i}", b"", head_branch="main", created_at="2025-01-02T00:00:00Z")

    def blob(request):
        from werkzeug import Response
        assert "Authorization" not in request.headers  # the token never leaves the API host
        return Response(fake.artifact_zips[good["id"]], content_type="application/zip")

    blob_server.expect_request(f"/artifact-{good['id']}.zip").respond_with_handler(blob)
    lookup = load_baseline(ArtifactSpec("canary-baseline"), client=client, config_name="sft-tiny",
                           hardware_key="nvidia-h100-80gb", default_branch="main")
    assert lookup.found and lookup.latest.raw == h100 and lookup.available_hardware == ("nvidia-h100-80gb", "nvidia-l4")
    assert f"#{good['id']}" in lookup.latest.origin and old["id"] != good["id"]
    assert len(blob_server.log) == 1
    blob_server.check_assertions()
    assert fake.calls("GET", r"/actions/artifacts$")[0].query["name"] == "canary-baseline"

    mismatch = load_baseline(ArtifactSpec("canary-baseline"), client=client, config_name="sft-tiny",
                             hardware_key="nvidia-a100-40gb", default_branch="main")
    assert mismatch.message.startswith("no baseline for hardware nvidia-a100-40gb (found: nvidia-h100-80gb, nvidia-l4)")


def test_artifact_missing_on_default_branch(fake, client):
    fake.add_artifact("canary-baseline", b"", head_branch="feature", created_at="2025-01-01T00:00:00Z")
    lookup = load_baseline("artifact:canary-baseline", client=client, config_name="sft-tiny", hardware_key="h")
    assert not lookup.found and "from a run on 'main' (1 with that name in all" in lookup.message


def test_artifact_without_actions_read_is_a_clear_error(fake, client):
    fake.denied.add("actions")
    with pytest.raises(BaselineError, match="actions: read"):
        load_baseline("artifact:canary-baseline", client=client, config_name="x", hardware_key="h",
                      default_branch="main")


def test_zip_reading_skips_path_traversal_and_rejects_non_zips():
    data = zip_of({"../../etc/metrics.json": metrics(step_time=6.6), "/abs/metrics.json": metrics(step_time=6.7),
                   "ok/metrics.json": metrics()})
    runs = read_zip_metrics(data, "artifact:x")
    assert [r.origin for r in runs] == ["artifact:x/ok/metrics.json"]
    with pytest.raises(BaselineError, match="not a valid zip"):
        read_zip_metrics(b"PK not really", "artifact:x")


# ------------------------------------------------------------------------- bounded, corrupt, hostile
def test_zip_limits_are_on_the_whole_archive_not_only_a_member(monkeypatch):
    from canary_runner.baselines import artifact

    many = zip_of({f"d{i}/x.txt": b"" for i in range(artifact.MAX_MEMBERS + 1)})
    with pytest.raises(BaselineError, match=f"refusing more than {artifact.MAX_MEMBERS}"):
        read_zip_metrics(many, "artifact:x")
    # Two metrics.json members, each under the per-member limit, over the total read budget.
    monkeypatch.setattr(artifact, "MAX_READ_BYTES", 2 * len(metrics()) - 1)
    with pytest.raises(BaselineError, match="in all"):
        read_zip_metrics(zip_of({"a/metrics.json": metrics(), "b/metrics.json": metrics()}), "artifact:x")
    # What every member declares, metrics.json or not, is bounded too (a zip bomb is refused unread).
    monkeypatch.setattr(artifact, "MAX_DECLARED_BYTES", 1 << 20)
    bomb = zip_of({"metrics.json": metrics(), "big.bin": b"\0" * (2 << 20)})
    with pytest.raises(BaselineError, match="uncompressed; refusing more than 1 MiB"):
        read_zip_metrics(bomb, "artifact:x")


def test_a_corrupt_metrics_member_makes_the_artifact_unusable():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("metrics.json", metrics())
        zf.writestr("b/metrics.json", metrics(hw="l4"))
    data = bytearray(buf.getvalue())
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("b/metrics.json")
    data[info.header_offset + 30 + len(info.filename) + 5] ^= 0x01  # one bit: the CRC-32 no longer matches
    with pytest.raises(BaselineError, match=r"'b/metrics.json' in artifact:x is corrupt or unreadable .*Bad CRC"):
        read_zip_metrics(bytes(data), "artifact:x")
    truncated = zip_of({"metrics.json": metrics()})[:-30]
    with pytest.raises(BaselineError, match="not a valid zip"):
        read_zip_metrics(truncated, "artifact:x")


def test_branch_reads_are_bounded(fake, client, monkeypatch):
    from canary_runner.baselines import branch

    fake.put_file(BRANCH, "sft-tiny/nvidia-h100-80gb/metrics.json", metrics() + b" " * 5000)
    monkeypatch.setattr(branch, "MAX_METRICS_BYTES", 4096)
    with pytest.raises(BaselineError, match="larger than 4096 bytes"):
        load_baseline("branch:canary-baselines", client=client, config_name="sft-tiny", hardware_key="nvidia-h100-80gb")


def test_branch_file_sent_as_a_contents_entry_is_decoded(fake, client):
    import base64

    path = "sft-tiny/nvidia-h100-80gb/metrics.json"
    fake.put_file(BRANCH, path, metrics(step_time=0.4))
    entry = {"type": "file", "encoding": "base64", "name": "metrics.json", "path": path, "sha": git_sha(metrics()),
             "size": len(metrics(step_time=0.4)), "content": base64.b64encode(metrics(step_time=0.4)).decode()}
    fake.fault("GET", r"/metrics\.json$", status=200, body=entry)  # the raw media type ignored
    lookup = load_baseline("branch:canary-baselines", client=client, config_name="sft-tiny",
                           hardware_key="nvidia-h100-80gb")
    assert lookup.found and lookup.latest.raw == metrics(step_time=0.4)
    fake.fault("GET", r"/metrics\.json$", status=200, body={**entry, "encoding": "none", "content": ""})
    with pytest.raises(BaselineError, match="answered a 'file' entry \\(encoding 'none'\\)"):
        load_baseline("branch:canary-baselines", client=client, config_name="sft-tiny", hardware_key="nvidia-h100-80gb")


def test_path_baselines_are_confined_to_the_workspace(tmp_path):
    ws = tmp_path / "ws"
    (ws / "store").mkdir(parents=True)
    (ws / "store" / "metrics.json").write_bytes(metrics())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "metrics.json").write_bytes(metrics())
    (ws / "link").symlink_to(outside)
    key = dict(config_name="sft-tiny", hardware_key="nvidia-h100-80gb", workspace=ws)
    assert load_baseline(f"path:{ws / 'store'}", **key).found
    for spec, words in ((f"path:{outside}", "is outside the workspace"), ("path:store/../../outside", "contains '..'"),
                        (f"path:{ws / 'link'}", "leads (through a symlink) outside")):
        with pytest.raises(BaselineSpecError, match=re.escape(words)):
            load_baseline(spec, **key)
    (ws / "store" / "metrics.json").unlink()
    (ws / "store" / "metrics.json").symlink_to(outside / "metrics.json")
    with pytest.raises(BaselineError, match="leads outside the workspace"):
        load_baseline(f"path:{ws / 'store'}", **key)
    # Outside the action (no workspace) the command line reads where it is told.
    assert load_baseline(f"path:{outside}", config_name="sft-tiny", hardware_key="nvidia-h100-80gb").found


def test_path_baseline_writes_never_follow_a_symlink(tmp_path):
    from canary_runner.baselines.local import write_path_baseline

    ws = tmp_path / "ws"
    victim = tmp_path / "victim"
    (ws / "store").mkdir(parents=True)
    victim.mkdir()
    (ws / "store" / "sft-tiny").symlink_to(victim)
    with pytest.raises(BaselineError, match="through the symlink .*sft-tiny"):
        write_path_baseline(ws / "store", metrics(), workspace=ws)
    with pytest.raises(BaselineError, match="through the symlink"):
        write_path_baseline(ws / "store", metrics())
    assert list(victim.iterdir()) == []
    with pytest.raises(BaselineSpecError, match="outside the workspace"):
        write_path_baseline(victim, metrics(), workspace=ws)
    # A symlink where the file goes is replaced, its target untouched.
    (ws / "store" / "sft-tiny").unlink()
    folder = ws / "store" / "sft-tiny" / "nvidia-h100-80gb"
    folder.mkdir(parents=True)
    (victim / "keep.txt").write_text("keep")
    (folder / "metrics.json").symlink_to(victim / "keep.txt")
    write_path_baseline(ws / "store", metrics(), workspace=ws)
    assert (victim / "keep.txt").read_text() == "keep"
    assert not (folder / "metrics.json").is_symlink() and (folder / "metrics.json").read_bytes() == metrics()


def test_branch_create_answered_502_after_it_landed_is_retried_and_found(fake, client):
    """Creating the baseline branch is safe to repeat: the second attempt's 422 "already exists" means done."""
    fake.fault("POST", r"/git/refs$", status=502, after_write=True)
    result = write_branch_baseline(client, BRANCH, metrics(), commit_sha="d" * 40, timestamp="20250105T000000Z")
    assert len(fake.calls("POST", r"/git/refs$")) == 2
    assert not result.created_branch  # the retry found it made
    assert fake.files[BRANCH]["sft-tiny/nvidia-h100-80gb/metrics.json"] == metrics()
