"""Validate requests against GitHub's OpenAPI description (npm package @octokit/openapi).

openapi-core matches one path segment per template parameter, but GitHub marks some parameters
`x-multi-segment` (contents `{path}`, git `{ref}`): those may hold slashes. When plain matching finds
no path, the request is retried with such values percent-encoded into one segment.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import PathNotFound
from werkzeug.datastructures import Headers, ImmutableMultiDict

REPO_ROOT = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO_ROOT / "scripts" / "fetch_openapi.sh"


def spec_path() -> Path:
    """The spec file, fetched by scripts/fetch_openapi.sh when missing (it prints the path)."""
    proc = subprocess.run(["bash", str(FETCH_SCRIPT)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{FETCH_SCRIPT} failed ({proc.returncode}): {proc.stderr.strip()}")
    return Path(proc.stdout.strip().splitlines()[-1])


class RequestInvalid(AssertionError):
    def __init__(self, kind: str, detail: str):
        self.kind = kind  # "path" (no such endpoint/method) or "request" (bad parameters or body)
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


@dataclass
class _Request:
    """The attributes openapi-core reads from a request (its `Request` protocol)."""

    method: str
    path: str
    parameters: RequestParameters
    body: bytes | None
    content_type: str
    host_url: str = "https://api.github.com"  # the spec's server: where the real API lives


class GitHubOpenAPI:
    def __init__(self, path: Path):
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        # The description is GitHub's own; validating the 13 MB document itself would cost seconds.
        self.api = OpenAPI.from_dict(data, config=Config(spec_validator_cls=None))
        self._multi = self._multi_segment_templates(data)

    @staticmethod
    def _multi_segment_templates(data: dict[str, Any]) -> list[tuple[re.Pattern[str], set[str]]]:
        shared = data.get("components", {}).get("parameters", {})

        def resolve(p: dict[str, Any]) -> dict[str, Any]:
            ref = p.get("$ref", "")
            return shared.get(ref.rsplit("/", 1)[-1], {}) if ref else p

        out = []
        for template, item in data["paths"].items():
            params = [resolve(p) for p in item.get("parameters", [])]
            for op in item.values():
                if isinstance(op, dict):
                    params += [resolve(p) for p in op.get("parameters", [])]
            multi = {p["name"] for p in params if p.get("in") == "path" and p.get("x-multi-segment")}
            if not multi:
                continue
            regex = re.sub(r"\{(\w+)\}", lambda m: f"(?P<{m[1]}>.+)" if m[1] in multi else f"(?P<{m[1]}>[^/]+)",
                           template)
            out.append((re.compile(f"^{regex}$"), multi))
        return out

    def validate(self, method: str, path: str, *, query: Any = None, headers: Any = None,
                 body: bytes | None = None, content_type: str | None = None) -> None:
        """Raise RequestInvalid unless GitHub's description accepts this request."""
        params = RequestParameters(query=ImmutableMultiDict(query or {}), header=Headers(headers or {}), cookie={})
        req = _Request(method.lower(), path, params, body or None, content_type or "application/octet-stream")
        try:
            self._validate(req)
        except PathNotFound:
            for regex, multi in self._multi:
                m = regex.match(path)
                if m:
                    encoded = path
                    for name in multi:
                        encoded = encoded.replace(m[name], quote(m[name], safe=""), 1)
                    req.path = encoded
                    try:
                        self._validate(req)
                        return
                    except PathNotFound:
                        continue
            raise RequestInvalid("path", f"{method.upper()} {path} is not in GitHub's API description") from None

    def _validate(self, req: _Request) -> None:
        from openapi_core.templating.paths.exceptions import OperationNotFound

        try:
            self.api.validate_request(req)
        except PathNotFound:
            raise
        except OperationNotFound as exc:
            raise RequestInvalid("path", str(exc)) from None
        except Exception as exc:  # openapi-core's validation errors; the cause has the schema detail
            detail = str(exc)
            for sub in getattr(exc, "schema_errors", None) or ([exc.__cause__] if exc.__cause__ else []):
                detail += f"; {getattr(sub, 'message', sub)}"
            raise RequestInvalid("request", f"{req.method.upper()} {req.path}: {detail}") from None
