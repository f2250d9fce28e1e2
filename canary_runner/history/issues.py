"""One GitHub issue per change point on main: opened when first found, updated while it stands,
closed (with a comment) once the shift is acknowledged.

Issues are found again by a hidden marker in their body, among the issues carrying the label, so a
second nightly run updates instead of duplicating, and an edited title does not lose the issue. An
issue someone closed by hand stays closed: the marker keeps it from being opened again.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .index import Index

DEFAULT_LABEL = "canary-regression"
MARKER_RE = re.compile(r"<!-- rlhf-canary:change-point config=(\S+) metric=(\S+) commit=([0-9a-f]{7,40}) -->")


def _token(text: str) -> str:
    """A config or metric name as it appears in a marker: no spaces, no `-->`."""
    return re.sub(r"[^A-Za-z0-9._/-]", "_", str(text))[:200] or "_"


def marker(config: str, metric: str, commit: str) -> str:
    return f"<!-- rlhf-canary:change-point config={_token(config)} metric={_token(metric)} commit={commit} -->"


def _code(text: object) -> str:
    """Text from an index (a reason, a login) as an inline code span: no mentions, links or markup."""
    return "`" + str(text).replace("`", "'").replace("\n", " ")[:300] + "`"


def _pct(change: object) -> str:
    return f"{change * 100:+.1f}%" if isinstance(change, (int, float)) and math.isfinite(change) else "?"


@dataclass
class IssueAction:
    action: str  # created | updated | unchanged | closed | left-closed
    number: int
    metric: str
    commit: str


def issue_title(config: str, cp: dict) -> str:
    return (f"canary: {cp.get('metric')} {cp.get('kind', 'shift')} of {_pct(cp.get('change'))} in "
            f"{_token(config)} at {str(cp.get('commit', ''))[:7]}")


def issue_body(config: str, cp: dict, *, repo: str, baseline: str) -> str:
    sha = str(cp.get("commit", ""))
    metric = str(cp.get("metric", ""))

    def num(key: str) -> str:
        v = cp.get(key)
        return f"{v:.6g}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"

    lines = [
        marker(config, metric, sha),
        f"The history of main shows a **{cp.get('kind', 'shift')}** in `{metric}` of config `{_token(config)}` "
        f"at commit https://github.com/{repo}/commit/{sha}.",
        "",
        "| before | after | change | significance | index in history |",
        "| --- | --- | --- | --- | --- |",
        f"| {num('before')} | {num('after')} | {_pct(cp.get('change'))} | {num('significance')} | {cp.get('index', '-')} |",
        "",
        "If the change is intended, acknowledge it and this issue closes on the next nightly run:",
        "",
        "```",
        f"canary history ack {sha} --reason '...' --baseline {baseline} --config {_token(config)} --metric {metric}",
        "```",
        "",
        "or comment `/canary accept <reason>` on the pull request that made it (owners, members and collaborators).",
    ]
    return "\n".join(lines)


def _issues_with_label(client, label: str) -> list[dict]:
    return [i for i in client.paginate(client.repo_path("issues"), params={"labels": label, "state": "all"})
            if isinstance(i, dict) and "pull_request" not in i]


def _same_drift(index: Index, cp: dict, found: dict[tuple[str, str], dict]) -> dict | None:
    """An open issue of the same metric whose commit lies on this drift's ramp: a drift seen again as
    more commits arrive may start a commit earlier or later, and is still the same drift."""
    last = str(cp.get("last_commit") or "")
    if cp.get("kind") != "drift" or not last:
        return None
    shas = [e.sha for e in index.entries]
    if cp.get("commit") not in shas or last not in shas:
        return None
    ramp = set(shas[shas.index(cp["commit"]): shas.index(last) + 1])
    return next((issue for (metric, sha), issue in found.items()
                 if metric == _token(str(cp.get("metric"))) and sha in ramp and issue.get("state") == "open"), None)


def sync_issues(client, index: Index, change_points: list[dict], *, label: str = DEFAULT_LABEL,
                baseline: str = "") -> list[IssueAction]:
    """Open or update one issue per change point of `index.config`; close the open ones whose change
    point is acknowledged in `index`. Returns what was done, issue by issue."""
    config = index.config
    found: dict[tuple[str, str], dict] = {}
    for issue in _issues_with_label(client, label):
        m = MARKER_RE.search(str(issue.get("body") or ""))
        if m and m[1] == _token(config):
            key = (m[2], m[3])
            # Several issues with one marker (a copy, say): the open one, else the oldest.
            old = found.get(key)
            if old is None or (old.get("state") != "open" and issue.get("state") == "open"):
                found[key] = issue
    done: list[IssueAction] = []
    for cp in change_points:
        metric, sha = str(cp.get("metric", "")), str(cp.get("commit", ""))
        if not sha or index.acked(sha, metric):
            continue  # acknowledged: closed below if an issue is open
        issue = found.get((_token(metric), sha)) or _same_drift(index, cp, found)
        title, body = issue_title(config, cp), issue_body(config, cp, repo=client.repo, baseline=baseline)
        if issue is None:
            new = client.post_json(client.repo_path("issues"), {"title": title, "body": body, "labels": [label]})
            found[(_token(metric), sha)] = new
            done.append(IssueAction("created", new["number"], metric, sha))
        elif issue.get("state") != "open":
            done.append(IssueAction("left-closed", issue["number"], metric, sha))
        elif issue.get("body") != body or issue.get("title") != title:
            client.patch_json(client.repo_path(f"issues/{issue['number']}"), {"title": title, "body": body})
            done.append(IssueAction("updated", issue["number"], metric, sha))
        else:
            done.append(IssueAction("unchanged", issue["number"], metric, sha))
    for (metric, sha), issue in found.items():
        ack = index.acked(sha, metric)
        if ack is None or issue.get("state") != "open":
            continue
        client.post_json(client.repo_path(f"issues/{issue['number']}/comments"),
                         {"body": f"Acknowledged as intended by {_code(ack.by or '?')} ({ack.at[:10] or 'no date'}): "
                                  f"{_code(ack.reason)}. Closing."})
        client.patch_json(client.repo_path(f"issues/{issue['number']}"), {"state": "closed", "state_reason": "completed"})
        done.append(IssueAction("closed", issue["number"], metric, sha))
    return done
