"""A fake GitHub REST API on loopback that answers like GitHub and validates every request.

Each request is checked against GitHub's OpenAPI description before it is served; an invalid one is
recorded in `invalid` and answered as GitHub would (404 for an unknown endpoint, 422 otherwise), and
the fixture fails the test unless the test expected it. The state (comments, check runs, statuses,
branches and files, artifacts) is kept in plain dicts so tests can set it up and inspect it.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from .openapi_validator import GitHubOpenAPI, RequestInvalid

FORBIDDEN = {"message": "Resource not accessible by integration",
             "documentation_url": "https://docs.github.com/rest", "status": "403"}


def git_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    action: Callable[[], None] | None = None
    times: int = 1
    after_write: bool = False  # serve the request first, then answer with `status` (a 5xx after the write)


class FakeGitHub:
    def __init__(self, server: HTTPServer, validator: GitHubOpenAPI, *, token: str = "ghs_fakeInstallationToken123",
                 repo: str = "octo-org/canary-app"):
        self.server = server
        self.validator = validator
        self.token = token
        self.repo = repo
        self.login = "github-actions[bot]"  # who the token's writes are authored by
        self.app_slug: str | None = "github-actions"  # the app behind the token (check runs carry it)
        self.user_endpoint_works = False  # GET /user: 403 for installation tokens, as on GitHub
        self.app_endpoint_works = False  # GET /app: needs a JWT on github.com (401 for installation tokens)
        self.repo_id = 1
        self.default_branch = "main"
        self.denied: set[str] = set()  # "checks", "comments", "statuses", "contents", "actions", "issues"
        self.comments: dict[int, list[dict]] = {}
        self.check_runs: dict[int, dict] = {}
        self.statuses: list[dict] = []
        self.refs: dict[str, str] = {"main": "a" * 40}
        self.files: dict[str, dict[str, bytes]] = {}  # branch -> path -> content
        self.artifacts: list[dict] = []
        self.artifact_zips: dict[int, bytes] = {}
        self.workflow_runs: dict[int, dict] = {}  # GET /actions/runs/{id}
        self.commit_parents: dict[str, list[str]] = {}  # the repository's commit graph, for compare
        self.blob_base: str | None = None  # where artifact zips redirect to (another host)
        self.pulls: list[dict] = []
        self.issues: list[dict] = []  # GET/POST /issues, PATCH /issues/{n} (pull requests are kept in `pulls`)
        self.requests: list[Recorded] = []
        self.invalid: list[RequestInvalid] = []
        self.faults: list[Fault] = []
        self._ids = itertools.count(1001)
        self._commits = itertools.count(1)
        server.expect_request(re.compile(r"^/.*")).respond_with_handler(self._dispatch)
        o, r = (re.escape(x) for x in repo.split("/"))
        base = f"/repos/{o}/{r}"
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Response]]] = [
            ("GET", re.compile(r"^/user$"), self._get_user),
            ("GET", re.compile(r"^/app$"), self._get_app),
            ("GET", re.compile(rf"^{base}$"), self._get_repo),
            ("GET", re.compile(rf"^{base}/issues$"), self._list_issues),
            ("POST", re.compile(rf"^{base}/issues$"), self._create_issue),
            ("PATCH", re.compile(rf"^{base}/issues/(\d+)$"), self._update_issue),
            ("GET", re.compile(rf"^{base}/issues/(\d+)/comments$"), self._list_comments),
            ("POST", re.compile(rf"^{base}/issues/(\d+)/comments$"), self._create_comment),
            ("PATCH", re.compile(rf"^{base}/issues/comments/(\d+)$"), self._update_comment),
            ("POST", re.compile(rf"^{base}/check-runs$"), self._create_check),
            ("PATCH", re.compile(rf"^{base}/check-runs/(\d+)$"), self._update_check),
            ("GET", re.compile(rf"^{base}/commits/([^/]+)/check-runs$"), self._list_checks_for_ref),
            ("GET", re.compile(rf"^{base}/commits/([0-9a-f]+)/pulls$"), self._list_pulls_for_commit),
            ("GET", re.compile(rf"^{base}/pulls/(\d+)$"), self._get_pull),
            ("POST", re.compile(rf"^{base}/statuses/([0-9a-f]+)$"), self._create_status),
            ("GET", re.compile(rf"^{base}/pulls$"), self._list_pulls),
            ("GET", re.compile(rf"^{base}/git/ref/heads/(.+)$"), self._get_ref),
            ("POST", re.compile(rf"^{base}/git/refs$"), self._create_ref),
            ("GET", re.compile(rf"^{base}/contents/(.+)$"), self._get_contents),
            ("PUT", re.compile(rf"^{base}/contents/(.+)$"), self._put_contents),
            ("DELETE", re.compile(rf"^{base}/contents/(.+)$"), self._delete_contents),
            ("GET", re.compile(rf"^{base}/actions/artifacts$"), self._list_artifacts),
            ("GET", re.compile(rf"^{base}/actions/artifacts/(\d+)/zip$"), self._download_artifact),
            ("GET", re.compile(rf"^{base}/actions/runs/(\d+)$"), self._get_workflow_run),
            ("GET", re.compile(rf"^{base}/actions/runs/(\d+)/artifacts$"), self._list_run_artifacts),
            ("GET", re.compile(rf"^{base}/compare/([0-9a-f]+)\.\.\.([0-9a-f]+)$"), self._compare),
        ]

    # -- helpers for tests --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def fault(self, method: str, pattern: str, *, status: int | None = None, body: Any = None,
              headers: dict[str, str] | None = None, action: Callable[[], None] | None = None,
              times: int = 1, after_write: bool = False) -> None:
        """The next `times` matching requests get `status` (and/or run `action` first). With
        `after_write` the request is served first and its answer replaced by `status`: GitHub wrote
        it, the client cannot know (a 502 from a gateway after the write)."""
        self.faults.append(Fault(method, re.compile(pattern), status, body, headers or {}, action, times, after_write))

    def add_comment(self, issue: int, body: str, login: str) -> dict:
        c = self._comment(issue, body, login)
        self.comments.setdefault(issue, []).append(c)
        return c

    def put_file(self, branch: str, path: str, content: bytes) -> None:
        self.files.setdefault(branch, {})[path] = content
        self.refs[branch] = self._new_commit()

    def calls(self, method: str, pattern: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    # -- dispatch -----------------------------------------------------------------------------------
    def _dispatch(self, request: Request) -> Response:
        body = request.get_data()
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = body
        self.requests.append(Recorded(request.method, request.path, dict(request.args),
                                      dict(request.headers), payload))
        try:
            self.validator.validate(request.method, request.path, query=request.args, headers=request.headers,
                                    body=body, content_type=request.content_type)
        except RequestInvalid as exc:
            self.invalid.append(exc)
            if exc.kind == "path":
                return self._json({"message": "Not Found"}, 404)
            return self._json({"message": f"Invalid request.\n\n{exc.detail}"}, 422)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._json({"message": "Bad credentials"}, 401)
        late = None
        for f in self.faults:
            if f.times > 0 and f.method == request.method and f.pattern.search(request.path):
                f.times -= 1
                if f.action:
                    f.action()
                if f.status is not None and f.after_write:
                    late = f
                elif f.status is not None:
                    return self._json(f.body if f.body is not None else {"message": "fault"}, f.status, f.headers)
                break
        for method, pattern, handler in self._routes:
            m = pattern.match(request.path)
            if m and method == request.method:
                response = handler(request, payload, *m.groups())
                if late is not None:
                    return self._json(late.body if late.body is not None else {"message": "fault"}, late.status,
                                      late.headers)
                return response
        return self._json({"message": "Not Found"}, 404)

    @staticmethod
    def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(json.dumps(data), status=status, headers=headers or {}, content_type="application/json")

    def _new_commit(self) -> str:
        return hashlib.sha1(b"commit %d" % next(self._commits)).hexdigest()

    def _page(self, request: Request, items: list) -> tuple[list, dict[str, str]]:
        per_page = min(int(request.args.get("per_page", 30)), 100)
        page = int(request.args.get("page", 1))
        chunk = items[(page - 1) * per_page: page * per_page]
        last = max(1, -(-len(items) // per_page))
        links = []
        args = {k: v for k, v in request.args.items() if k != "page"}

        def link(p: int, rel: str) -> str:
            return f'<{self.url}{request.path}?{urlencode({**args, "page": p})}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        return chunk, ({"Link": ", ".join(links)} if links else {})

    # -- identity / repo ----------------------------------------------------------------------------
    def _get_user(self, request: Request, _: Any) -> Response:
        if not self.user_endpoint_works:
            return self._json(FORBIDDEN, 403)
        return self._json({"login": self.login, "id": 1, "type": "User"})

    def _get_app(self, request: Request, _: Any) -> Response:
        if not (self.app_endpoint_works and self.app_slug):
            return self._json({"message": "A JSON web token could not be decoded",
                               "documentation_url": "https://docs.github.com/rest"}, 401)
        return self._json({"id": 77, "slug": self.app_slug, "name": self.app_slug, "owner": None})

    def _get_repo(self, request: Request, _: Any) -> Response:
        return self._json({"id": self.repo_id, "full_name": self.repo, "name": self.repo.split("/")[1],
                           "default_branch": self.default_branch, "private": False})

    # -- comments -----------------------------------------------------------------------------------
    def _comment(self, issue: int, body: str, login: str) -> dict:
        cid = next(self._ids)
        return {"id": cid, "node_id": f"IC_{cid}", "body": body,
                "html_url": f"https://github.com/{self.repo}/pull/{issue}#issuecomment-{cid}",
                "issue_url": f"{self.url}/repos/{self.repo}/issues/{issue}",
                "user": {"login": login, "id": hash(login) % 10_000,
                         "type": "Bot" if login.endswith("[bot]") else "User"},
                "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z",
                "author_association": "NONE"}

    def _list_comments(self, request: Request, _: Any, issue: str) -> Response:
        chunk, headers = self._page(request, self.comments.get(int(issue), []))
        return self._json(chunk, 200, headers)

    def _create_comment(self, request: Request, payload: Any, issue: str) -> Response:
        if "comments" in self.denied:
            return self._json(FORBIDDEN, 403)
        if len(payload["body"]) > 65536:
            return self._json({"message": "Validation Failed", "errors": [{"field": "body", "code": "custom"}]}, 422)
        return self._json(self.add_comment(int(issue), payload["body"], self.login), 201)

    def _update_comment(self, request: Request, payload: Any, cid: str) -> Response:
        if "comments" in self.denied:
            return self._json(FORBIDDEN, 403)
        for c in itertools.chain.from_iterable(self.comments.values()):
            if c["id"] == int(cid):
                c["body"] = payload["body"]
                c["updated_at"] = "2025-01-02T00:00:00Z"
                return self._json(c)
        return self._json({"message": "Not Found"}, 404)

    # -- issues -------------------------------------------------------------------------------------
    def add_issue(self, title: str, body: str, *, labels: tuple[str, ...] = (), state: str = "open",
                  login: str | None = None) -> dict:
        number = max([i["number"] for i in self.issues] + [p["number"] for p in self.pulls] + [0]) + 1
        iid = next(self._ids)
        issue = {"id": iid, "node_id": f"I_{iid}", "number": number, "title": title, "body": body,
                 "state": state, "state_reason": None, "locked": False, "comments": 0,
                 "labels": [{"id": hash(n) % 10_000, "name": n, "color": "ededed", "default": False} for n in labels],
                 "html_url": f"https://github.com/{self.repo}/issues/{number}",
                 "url": f"{self.url}/repos/{self.repo}/issues/{number}",
                 "user": {"login": login or self.login, "id": 1, "type": "Bot"},
                 "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z", "closed_at": None,
                 "author_association": "NONE"}
        self.issues.append(issue)
        return issue

    def _list_issues(self, request: Request, _: Any) -> Response:
        if "issues" in self.denied:
            return self._json(FORBIDDEN, 403)
        state = request.args.get("state", "open")
        wanted = [n for n in request.args.get("labels", "").split(",") if n]
        found = [i for i in self.issues if (state == "all" or i["state"] == state)
                 and all(any(lab["name"] == n for lab in i["labels"]) for n in wanted)]
        # GitHub lists pull requests among issues (with a `pull_request` key); callers must skip them.
        found += [{**p, "labels": p.get("labels", []), "pull_request": {"url": p.get("url", "")}} for p in self.pulls
                  if state in ("all", p.get("state", "open"))
                  and all(any(lab["name"] == n for lab in p.get("labels", [])) for n in wanted)]
        chunk, headers = self._page(request, sorted(found, key=lambda i: -i["number"]))  # newest first
        return self._json(chunk, 200, headers)

    def _create_issue(self, request: Request, payload: Any) -> Response:
        if "issues" in self.denied:
            return self._json(FORBIDDEN, 403)
        if len(payload.get("body") or "") > 65536:
            return self._json({"message": "Validation Failed", "errors": [{"field": "body", "code": "custom"}]}, 422)
        labels = tuple(lab if isinstance(lab, str) else lab["name"] for lab in payload.get("labels", []))
        return self._json(self.add_issue(str(payload["title"]), payload.get("body") or "", labels=labels), 201)

    def _update_issue(self, request: Request, payload: Any, number: str) -> Response:
        if "issues" in self.denied:
            return self._json(FORBIDDEN, 403)
        issue = next((i for i in self.issues if i["number"] == int(number)), None)
        if issue is None:
            return self._json({"message": "Not Found"}, 404)
        for key in ("title", "body", "state", "state_reason"):
            if key in payload:
                issue[key] = payload[key]
        if "labels" in payload:
            issue["labels"] = [{"id": 1, "name": n, "color": "ededed", "default": False} for n in payload["labels"]]
        issue["closed_at"] = "2025-01-02T00:00:00Z" if issue["state"] == "closed" else None
        issue["updated_at"] = "2025-01-02T00:00:00Z"
        return self._json(issue)

    # -- checks and statuses ------------------------------------------------------------------------
    def _check_json(self, run: dict) -> dict:
        return {**{k: v for k, v in run.items() if k != "annotations"},
                "app": {"id": 77, "slug": self.app_slug} if self.app_slug else None,
                "html_url": f"https://github.com/{self.repo}/runs/{run['id']}",
                "output": {**run.get("output", {}), "annotations_count": len(run["annotations"])}}

    def _apply_output(self, run: dict, output: dict | None) -> None:
        if output:
            run["annotations"] += output.get("annotations", [])
            run["output"] = {k: v for k, v in output.items() if k != "annotations"}

    def _create_check(self, request: Request, payload: Any) -> Response:
        if "checks" in self.denied:
            return self._json(FORBIDDEN, 403)
        run = {"id": next(self._ids), "name": payload["name"], "head_sha": payload["head_sha"],
               "status": payload.get("status", "queued"), "conclusion": payload.get("conclusion"),
               "details_url": payload.get("details_url"), "external_id": payload.get("external_id"),
               "annotations": [], "output": {}}
        if run["conclusion"]:
            run["status"] = "completed"
        self._apply_output(run, payload.get("output"))
        self.check_runs[run["id"]] = run
        return self._json(self._check_json(run), 201)

    def _update_check(self, request: Request, payload: Any, rid: str) -> Response:
        if "checks" in self.denied:
            return self._json(FORBIDDEN, 403)
        run = self.check_runs.get(int(rid))
        if run is None:
            return self._json({"message": "Not Found"}, 404)
        for key in ("status", "conclusion", "details_url"):
            if key in payload:
                run[key] = payload[key]
        if payload.get("conclusion"):
            run["status"] = "completed"
        self._apply_output(run, payload.get("output"))
        return self._json(self._check_json(run))

    def _list_checks_for_ref(self, request: Request, _: Any, ref: str) -> Response:
        name = request.args.get("check_name")
        runs = [self._check_json(r) for r in self.check_runs.values()
                if r["head_sha"] == ref and (not name or r["name"] == name)]
        chunk, headers = self._page(request, runs)
        return self._json({"total_count": len(runs), "check_runs": chunk}, 200, headers)

    def _create_status(self, request: Request, payload: Any, sha: str) -> Response:
        if "statuses" in self.denied:
            return self._json(FORBIDDEN, 403)
        if len(payload.get("description") or "") > 140:
            return self._json({"message": "Validation Failed",
                               "errors": [{"resource": "Status", "field": "description", "code": "custom",
                                           "message": "description is too long (maximum is 140 characters)"}]}, 422)
        status = {"id": next(self._ids), "sha": sha, **payload,
                  "url": f"{self.url}/repos/{self.repo}/statuses/{sha}"}
        self.statuses.append(status)
        return self._json(status, 201)

    def _list_pulls(self, request: Request, _: Any) -> Response:
        head = request.args.get("head")
        pulls = [p for p in self.pulls if not head or f"{p['head']['user']['login']}:{p['head']['ref']}" == head]
        chunk, headers = self._page(request, pulls)
        return self._json(chunk, 200, headers)

    def _list_pulls_for_commit(self, request: Request, _: Any, sha: str) -> Response:
        chunk, headers = self._page(request, [p for p in self.pulls if p["head"]["sha"] == sha])
        return self._json(chunk, 200, headers)

    def _get_pull(self, request: Request, _: Any, number: str) -> Response:
        pr = next((p for p in self.pulls if p["number"] == int(number)), None)
        return self._json(pr) if pr else self._json({"message": "Not Found"}, 404)

    # -- git refs and contents ----------------------------------------------------------------------
    def _get_ref(self, request: Request, _: Any, branch: str) -> Response:
        if branch not in self.refs:
            return self._json({"message": "Not Found"}, 404)
        return self._json({"ref": f"refs/heads/{branch}", "object": {"type": "commit", "sha": self.refs[branch]}})

    def _create_ref(self, request: Request, payload: Any) -> Response:
        if "contents" in self.denied:
            return self._json(FORBIDDEN, 403)
        branch = payload["ref"].removeprefix("refs/heads/")
        if branch in self.refs:
            return self._json({"message": "Reference already exists"}, 422)
        self.refs[branch] = payload["sha"]
        base = next((b for b, s in self.refs.items() if s == payload["sha"] and b != branch), None)
        self.files[branch] = dict(self.files.get(base, {})) if base else {}
        return self._json({"ref": payload["ref"], "object": {"type": "commit", "sha": payload["sha"]}}, 201)

    def _get_contents(self, request: Request, _: Any, path: str) -> Response:
        branch = request.args.get("ref", self.default_branch)
        if branch not in self.refs:
            return self._json({"message": f"No commit found for the ref {branch}"}, 404)
        tree = self.files.get(branch, {})
        if path in tree:
            data = tree[path]
            if request.headers.get("Accept") == "application/vnd.github.raw+json":
                return Response(data, content_type="application/vnd.github.raw+json")
            return self._json({"type": "file", "encoding": "base64", "size": len(data), "name": path.rsplit("/", 1)[-1],
                               "path": path, "sha": git_sha(data), "content": base64.b64encode(data).decode()})
        prefix = path.rstrip("/") + "/"
        children: dict[str, dict] = {}
        for p, data in tree.items():
            if p.startswith(prefix):
                rest = p[len(prefix):]
                name = rest.split("/", 1)[0]
                if "/" in rest:
                    children[name] = {"type": "dir", "name": name, "path": prefix + name, "sha": "0" * 40, "size": 0}
                else:
                    children[name] = {"type": "file", "name": name, "path": p, "sha": git_sha(data), "size": len(data)}
        if not children:
            return self._json({"message": "Not Found"}, 404)
        return self._json(sorted(children.values(), key=lambda e: e["name"]))

    def _put_contents(self, request: Request, payload: Any, path: str) -> Response:
        if "contents" in self.denied:
            return self._json(FORBIDDEN, 403)
        branch = payload.get("branch", self.default_branch)
        if branch not in self.refs:
            return self._json({"message": f"Branch {branch} not found"}, 404)
        tree = self.files.setdefault(branch, {})
        if path in tree:
            if "sha" not in payload:
                return self._json({"message": 'Invalid request.\n\n"sha" wasn\'t supplied.'}, 422)
            if payload["sha"] != git_sha(tree[path]):
                return self._json({"message": f"{path} does not match {payload['sha']}"}, 409)
        data = base64.b64decode(payload["content"])
        created = path not in tree
        tree[path] = data
        self.refs[branch] = self._new_commit()
        return self._json({"content": {"path": path, "sha": git_sha(data)},
                           "commit": {"sha": self.refs[branch], "message": payload["message"]}},
                          201 if created else 200)

    def _delete_contents(self, request: Request, payload: Any, path: str) -> Response:
        if "contents" in self.denied:
            return self._json(FORBIDDEN, 403)
        branch = payload.get("branch", self.default_branch)
        tree = self.files.get(branch, {})
        if path not in tree:
            return self._json({"message": "Not Found"}, 404)
        if payload["sha"] != git_sha(tree[path]):
            return self._json({"message": f"{path} does not match {payload['sha']}"}, 409)
        del tree[path]
        self.refs[branch] = self._new_commit()
        return self._json({"content": None, "commit": {"sha": self.refs[branch]}})

    # -- commits ------------------------------------------------------------------------------------
    def add_commits(self, parents: dict[str, list[str]]) -> None:
        """Commits of the repository (sha -> parent shas), e.g. from `git rev-list --parents`."""
        self.commit_parents.update(parents)

    def _ancestors(self, sha: str) -> set[str]:
        seen, todo = set(), [sha]
        while todo:
            c = todo.pop()
            if c not in seen:
                seen.add(c)
                todo += self.commit_parents.get(c, [])
        return seen

    def _commit_json(self, sha: str) -> dict:
        url = f"{self.url}/repos/{self.repo}/commits/{sha}"
        person = {"name": "Mona", "email": "mona@example.com", "date": "2025-01-01T00:00:00Z"}
        return {"url": url, "sha": sha, "node_id": f"C_{sha[:10]}", "html_url": f"https://github.com/{self.repo}/commit/{sha}",
                "comments_url": f"{url}/comments", "author": None, "committer": None,
                "commit": {"url": url, "author": person, "committer": person, "message": sha[:7], "comment_count": 0,
                           "tree": {"sha": "0" * 40, "url": url}},
                "parents": [{"sha": p, "url": f"{self.url}/repos/{self.repo}/commits/{p}"}
                            for p in self.commit_parents.get(sha, [])]}

    def _compare(self, request: Request, _: Any, base: str, head: str) -> Response:
        """GET compare/{base}...{head}: status, ahead/behind counts, the merge base and the commits
        of head that base lacks (oldest first), computed from `commit_parents`."""
        if "contents" in self.denied:
            return self._json(FORBIDDEN, 403)
        full = {}
        for given in (base, head):
            match = [c for c in self.commit_parents if c.startswith(given)]
            if len(match) != 1:
                return self._json({"message": f"No commit found for SHA: {given}"}, 404)
            full[given] = match[0]
        base, head = full[base], full[head]
        a_base, a_head = self._ancestors(base), self._ancestors(head)
        common = a_base & a_head
        # The best common ancestor: one that no other common ancestor descends from.
        best = [c for c in common if not any(c != o and c in self._ancestors(o) for o in common)]
        ahead, behind = a_head - a_base, a_base - a_head
        status = "identical" if base == head else "ahead" if not behind else "behind" if not ahead else "diverged"
        order = sorted(ahead, key=lambda c: len(self._ancestors(c)))  # oldest first, as GitHub lists them
        per_page = min(int(request.args.get("per_page", 250)), 250)
        url = f"https://github.com/{self.repo}/compare/{base}...{head}"
        return self._json({"url": f"{self.url}/repos/{self.repo}/compare/{base}...{head}", "html_url": url,
                           "permalink_url": url, "diff_url": url + ".diff", "patch_url": url + ".patch",
                           "base_commit": self._commit_json(base),
                           "merge_base_commit": self._commit_json(sorted(best)[0]) if best else None,
                           "status": status, "ahead_by": len(ahead), "behind_by": len(behind),
                           "total_commits": len(ahead), "commits": [self._commit_json(c) for c in order[:per_page]],
                           "files": []})

    # -- artifacts ----------------------------------------------------------------------------------
    def add_artifact(self, name: str, zip_bytes: bytes, *, head_branch: str, created_at: str,
                     expired: bool = False, event: str = "push", head_repo: str | None = None) -> dict:
        """An artifact uploaded by a workflow run of `event` on `head_branch` of `head_repo` (default:
        this repository; another name is a fork, with its own repository id)."""
        aid = next(self._ids)
        head_repo = head_repo or self.repo
        head_repo_id = self.repo_id if head_repo == self.repo else 1000 + len(head_repo)
        art = {"id": aid, "node_id": f"MDg6QXJ0aWZhY3Q{aid}", "name": name, "size_in_bytes": len(zip_bytes),
               "url": f"{self.url}/repos/{self.repo}/actions/artifacts/{aid}",
               "archive_download_url": f"{self.url}/repos/{self.repo}/actions/artifacts/{aid}/zip",
               "expired": expired, "created_at": created_at, "updated_at": created_at,
               "expires_at": "2099-01-01T00:00:00Z", "digest": None,
               "workflow_run": {"id": aid * 10, "repository_id": self.repo_id, "head_repository_id": head_repo_id,
                                "head_branch": head_branch, "head_sha": hashlib.sha1(str(aid).encode()).hexdigest()}}
        wr = art["workflow_run"]
        self.workflow_runs[wr["id"]] = {
            "id": wr["id"], "name": "canary", "event": event, "status": "completed", "conclusion": "success",
            "head_branch": head_branch, "head_sha": wr["head_sha"], "head_repository_id": head_repo_id,
            "head_repository": {"id": head_repo_id, "full_name": head_repo},
            "repository": {"id": self.repo_id, "full_name": self.repo}, "pull_requests": []}
        self.artifacts.append(art)
        self.artifact_zips[aid] = zip_bytes
        return art

    def _list_artifacts(self, request: Request, _: Any) -> Response:
        if "actions" in self.denied:
            return self._json(FORBIDDEN, 403)
        name = request.args.get("name")
        arts = [a for a in reversed(self.artifacts) if not name or a["name"] == name]  # newest first
        chunk, headers = self._page(request, arts)
        return self._json({"total_count": len(arts), "artifacts": chunk}, 200, headers)

    def _list_run_artifacts(self, request: Request, _: Any, run_id: str) -> Response:
        """GET /actions/runs/{run_id}/artifacts: the artifacts whose workflow_run.id is run_id."""
        if "actions" in self.denied:
            return self._json(FORBIDDEN, 403)
        arts = [a for a in reversed(self.artifacts) if a["workflow_run"]["id"] == int(run_id)]
        chunk, headers = self._page(request, arts)
        return self._json({"total_count": len(arts), "artifacts": chunk}, 200, headers)

    def _get_workflow_run(self, request: Request, _: Any, run_id: str) -> Response:
        if "actions" in self.denied:
            return self._json(FORBIDDEN, 403)
        run = self.workflow_runs.get(int(run_id))
        return self._json(run) if run else self._json({"message": "Not Found"}, 404)

    def _download_artifact(self, request: Request, _: Any, aid: str) -> Response:
        if "actions" in self.denied:
            return self._json(FORBIDDEN, 403)
        art = next((a for a in self.artifacts if a["id"] == int(aid)), None)
        if art is None:
            return self._json({"message": "Not Found"}, 404)
        if art["expired"]:
            return self._json({"message": "Artifact has expired"}, 410)
        # GitHub answers with a 302 to a short-lived URL on blob storage (another host).
        return Response(status=302, headers={"Location": f"{self.blob_base}/artifact-{aid}.zip?sig=short-lived"})
