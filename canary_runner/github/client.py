"""A small GitHub REST client over `requests`.

What it adds to a bare `requests.Session`, and why:
- retries with backoff on 5xx, and GitHub's rate-limit rules on 403/429 (honour `retry-after`, else
  wait for `x-ratelimit-reset` when `x-ratelimit-remaining` is 0, else back off), all bounded in
  attempts and in total wait, so a canary job never hangs on the API;
- pagination by the `Link` header, followed only on the API's own origin (the token goes nowhere else);
- the token is attached by an auth hook that only signs requests to the API origin, is never put in a
  repr, log line or exception, and is scrubbed from any text the client echoes;
- errors are typed (`PermissionDenied`, `NotFound`, `Conflict`, `RateLimited`, `ServerError`) so callers can
  fall back, and say what happened: a refusal is not an outage;
- no error message carries a URL's query string or userinfo (pre-signed artifact URLs hold their
  credential in `sig=`), whatever produced the message;
- a POST is not repeated blindly after a 5xx or a lost response: it may have been written, so the
  error says so (`ServerError.maybe_written`) and the caller looks before posting again.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

log = logging.getLogger("canary_runner.github")

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A URL's query (`?sig=...`) after `scheme://host[/path]` or after a bare absolute path (urllib3 names
# only the path: "Max retries exceeded with url: /a.zip?sig=..."), and a URL's userinfo.
_URL_QUERY_RE = re.compile(r"((?:[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#'\"<>]*)(?:/[^\s?#'\"<>]*)?|/[^\s?#'\"<>]*)"
                           r"\?[^\s#'\"<>()]+")
_URL_USERINFO_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/@'\"<>]+@")
REDACTED_QUERY = "?REDACTED"


def redact_urls(text: str) -> str:
    """`text` with every URL's query string and userinfo removed. Error messages quote URLs (ours,
    urllib3's, a server's echo of the request) and a pre-signed URL carries its credential there."""
    if not text:
        return text
    return _URL_QUERY_RE.sub(lambda m: m[1] + REDACTED_QUERY, _URL_USERINFO_RE.sub(r"\1", str(text)))


def _user_agent() -> str:
    try:
        from importlib.metadata import version

        return f"rlhf-canary/{version('rlhf-canary')}"
    except Exception:  # not installed (running from a checkout)
        return "rlhf-canary"


# --------------------------------------------------------------------------------------------- errors
def client_from_env(repo: str | None = None, token: str | None = None, api_url: str | None = None,
                    what: str = "GitHub") -> "GitHubClient":
    """A client for `repo` (default $GITHUB_REPOSITORY) with `token` (default $GITHUB_TOKEN, then $GH_TOKEN):
    what the command-line tools use outside the action. ValueError says what `what` needs and how to give it."""
    repo = repo or os.environ.get("GITHUB_REPOSITORY") or ""
    if not repo:
        raise ValueError(f"{what} needs a repository: pass --repo owner/name or set GITHUB_REPOSITORY")
    token = token or os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN") or None
    return GitHubClient(token, api_url=api_url or None, repo=repo)


class GitHubError(Exception):
    """The API refused or failed a request, after any retries. Neither `url` nor `message` carries
    credentials or a query string."""

    def __init__(self, status: int, message: str, url: str, *, method: str = "",
                 documentation_url: str | None = None):
        self.status = status
        self.message = redact_urls(message)
        self.url = redact_urls(url)
        message, url = self.message, self.url
        self.method = method
        self.documentation_url = documentation_url
        where = f"{method} {url}".strip()
        super().__init__(f"GitHub API {where} failed with {status or 'no response'}: {message}")


class PermissionDenied(GitHubError):
    """403 that is not a rate limit, or 404 on a write: the token may not do this (fork PRs,
    read-only tokens, missing `permissions:`). Callers fall back rather than fail the run."""


class NotFound(GitHubError):
    """404 on a read."""


class Conflict(GitHubError):
    """409: the resource changed under us (e.g. a contents PUT with a stale `sha`)."""


class RateLimited(GitHubError):
    """Still rate limited when the attempt or wait budget ran out: GitHub is throttling, not refusing."""


class ServerError(GitHubError):
    """5xx after the retries, or no response at all (network): an outage, not a refusal.

    `maybe_written`: a write that may have reached GitHub (a 5xx or a lost response after the request
    was sent). Such a POST is not repeated by the client: the caller checks whether it landed first."""

    def __init__(self, *args: Any, maybe_written: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.maybe_written = maybe_written


def is_outage(exc: BaseException) -> bool:
    """GitHub (or the network to it) failing or throttling, as opposed to refusing."""
    return isinstance(exc, (ServerError, RateLimited))


# ---------------------------------------------------------------------------------------- retry policy
@dataclass
class RetryPolicy:
    """Bounds for retrying one request. `sleep` and `clock` are injectable for tests."""

    max_attempts: int = 5
    max_total_wait: float = 120.0  # seconds slept across all attempts of one request
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    reset_margin: float = 1.0  # GitHub's reset is whole seconds; wait a little past it
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def backoff(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))


# ------------------------------------------------------------------------------------------ auth hook
class _TokenAuth(requests.auth.AuthBase):
    """Adds the bearer token only to requests bound for the API origin."""

    def __init__(self, token: str, origin: tuple[str, str]):
        self._token = token
        self._origin = origin

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        parts = urlsplit(r.url or "")
        if (parts.scheme, parts.netloc) == self._origin:
            r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:
        return "<_TokenAuth ***>"


def strip_credentials(url: str) -> str:
    """The URL without userinfo or token-like query parameters, safe for messages."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = "&".join(
        p for p in parts.query.split("&") if p and not p.lower().startswith(("access_token=", "token="))
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _adapter() -> HTTPAdapter:
    # Connection-level failures (refused, reset, DNS) are retried by urllib3; HTTP statuses are
    # retried by `GitHubClient.request`, which knows GitHub's rate-limit headers and the wait budget.
    return HTTPAdapter(max_retries=Retry(total=3, connect=3, read=2, status=0, other=0, backoff_factor=0.5,
                                         raise_on_status=False))


# ---------------------------------------------------------------------------------------------- client
class GitHubClient:
    """GitHub REST API client for one repository.

    `token=None` makes anonymous requests (public repositories, low rate limit).
    """

    def __init__(
        self,
        token: str | None,
        api_url: str | None = None,
        repo: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | tuple[float, float] = (10.0, 60.0),
        max_pages: int = 100,
        session: requests.Session | None = None,
    ):
        api_url = (api_url or os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"GitHub API URL must be http(s)://host[/path], got {strip_credentials(api_url)!r}")
        if parts.username or parts.password:
            raise ValueError("GitHub API URL must not embed credentials; pass the token separately")
        self.api_url = api_url
        self._origin = (parts.scheme, parts.netloc)
        repo = repo if repo is not None else os.environ.get("GITHUB_REPOSITORY", "")
        if repo and not _REPO_RE.match(repo):
            raise ValueError(f"repository must look like 'owner/name', got {repo!r}")
        self.repo = repo
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.max_pages = max_pages
        self._token = token or None
        self.session = session or requests.Session()
        self.session.headers.update({
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": _user_agent(),
        })
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, _adapter())
        if self._token:
            self.session.auth = _TokenAuth(self._token, self._origin)
        # A separate, credential-free session for redirects to other hosts (artifact blob storage).
        self._bare = requests.Session()
        self._bare.headers["User-Agent"] = _user_agent()
        for scheme in ("http://", "https://"):
            self._bare.mount(scheme, _adapter())

    def __repr__(self) -> str:
        return f"GitHubClient(api_url={self.api_url!r}, repo={self.repo!r}, token={'***' if self._token else None})"

    # -- identity / helpers -------------------------------------------------------------------------
    @property
    def owner(self) -> str:
        return self.repo.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.repo.split("/", 1)[1]

    @property
    def token_kind(self) -> str:
        """'installation' (GITHUB_TOKEN, app tokens), 'user' (PATs, OAuth), 'unknown' or 'none',
        from GitHub's documented token prefixes. Decides whether `GET /user` can work."""
        t = self._token
        if not t:
            return "none"
        if t.startswith("ghs_"):
            return "installation"
        if t.startswith(("ghp_", "gho_", "ghu_", "github_pat_")):
            return "user"
        return "unknown"

    def repo_path(self, suffix: str = "") -> str:
        if not self.repo:
            raise ValueError("no repository set: pass repo='owner/name' or set GITHUB_REPOSITORY")
        return f"/repos/{self.repo}" + (f"/{suffix.lstrip('/')}" if suffix else "")

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.api_url + "/" + path.lstrip("/")

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token and text else text

    # -- core request ---------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        allow_redirects: bool = True,
        stream: bool = False,
        retry_server_errors: bool | None = None,
        _session: requests.Session | None = None,
    ) -> requests.Response:
        """Send one API request with retries; return the response for 2xx/3xx, raise `GitHubError`.

        `retry_server_errors`: repeat the request after a 5xx. Default: yes, except for POST, which
        creates something each time (a comment, a check run): a 5xx may come after the write, so a
        POST's 5xx raises `ServerError(maybe_written=True)` at once. Pass True for a POST that is
        safe to repeat (a commit status: the latest one per context wins)."""
        method = method.upper()
        url = self.url(path)
        session = _session or self.session
        if session is self.session and (urlsplit(url).scheme, urlsplit(url).netloc) != self._origin:
            raise ValueError(f"refusing to send API credentials to another origin: {redact_urls(url)}")
        if retry_server_errors is None:
            retry_server_errors = method != "POST"
        safe_url = redact_urls(strip_credentials(url))
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = session.request(method, url, params=params, json=json, headers=dict(headers or {}),
                                       timeout=self.timeout, allow_redirects=allow_redirects, stream=stream)
            except requests.RequestException as exc:  # urllib3 already retried connection errors
                raise ServerError(0, self._redact(f"no response ({type(exc).__name__}: {exc})"), safe_url,
                                  method=method,
                                  maybe_written=method in _WRITE_METHODS and not _never_sent(exc)) from None
            if resp.status_code < 400:
                return resp
            delay, why = self._retry_delay(resp, attempt)
            if resp.status_code >= 500 and not retry_server_errors:
                raise self._error(resp, method, safe_url, rate_limited=False, attempts=0)
            if delay is None or attempt >= self.retry.max_attempts or waited + delay > self.retry.max_total_wait:
                raise self._error(resp, method, safe_url, rate_limited=why == "rate limit",
                                  attempts=attempt if delay is not None else 0)
            log.warning("GitHub API %s %s answered %s (%s); retrying in %.1fs (attempt %d of %d)",
                        method, urlsplit(safe_url).path, resp.status_code, why, delay, attempt + 1,
                        self.retry.max_attempts)
            resp.close()
            self.retry.sleep(delay)
            waited += delay

    def _retry_delay(self, resp: requests.Response, attempt: int) -> tuple[float | None, str]:
        """Seconds to wait before retrying `resp`, or None when it must not be retried."""
        status = resp.status_code
        h = resp.headers
        if status >= 500:
            # Gateway errors and GitHub's occasional 500s are transient; GitHub advises retrying.
            # (A POST is not retried here unless its caller says it is safe: see `request`.)
            try:
                return max(0.0, float(h["retry-after"])), "server error"
            except (KeyError, ValueError):
                return self.retry.backoff(attempt), "server error"
        if status not in (403, 429):
            return None, ""
        message = _message_of(resp).lower()
        retry_after = h.get("retry-after")
        remaining = h.get("x-ratelimit-remaining")
        reset = h.get("x-ratelimit-reset")
        is_limit = status == 429 or retry_after is not None or remaining == "0" or "rate limit" in message
        if not is_limit:
            return None, ""  # a permission problem: retrying cannot help
        if retry_after is not None:
            try:
                return max(0.0, float(retry_after)), "rate limit"
            except ValueError:
                pass  # an HTTP-date: fall through to the other rules
        if remaining == "0" and reset is not None:
            try:
                return max(0.0, float(reset) - self.retry.clock()) + self.retry.reset_margin, "rate limit"
            except ValueError:
                pass
        # Secondary limit without hints: GitHub asks for at least a minute, growing exponentially.
        # The budget check in `request` turns an unaffordable wait into a RateLimited error.
        return max(self.retry.backoff(attempt), 60.0 if "secondary" in message else 0.0), "rate limit"

    def _error(self, resp: requests.Response, method: str, safe_url: str, *, rate_limited: bool,
               attempts: int) -> GitHubError:
        status = resp.status_code
        message = self._redact(_message_of(resp)) or resp.reason or "error"
        doc = None
        try:
            body = resp.json()
            if isinstance(body, dict):
                doc = body.get("documentation_url")
        except ValueError:
            pass
        kwargs = {"method": method, "documentation_url": doc}
        if rate_limited:
            reset = resp.headers.get("x-ratelimit-reset")
            hint = f" (limit resets at epoch {reset})" if reset else ""
            return RateLimited(status, f"rate limited and the retry budget is spent{hint}: {message}",
                               safe_url, **kwargs)
        if attempts:
            message = f"{message} (gave up after {attempts} attempts)"
        if status == 403 or (status == 404 and method in _WRITE_METHODS):
            return PermissionDenied(status, message, safe_url, **kwargs)
        if status == 404:
            return NotFound(status, message, safe_url, **kwargs)
        if status == 409:
            return Conflict(status, message, safe_url, **kwargs)
        if status >= 500:
            return ServerError(status, message, safe_url, maybe_written=method in _WRITE_METHODS, **kwargs)
        return GitHubError(status, message, safe_url, **kwargs)

    # -- conveniences ---------------------------------------------------------------------------------
    def get_json(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw).json()

    def post_json(self, path: str, body: Any, **kw: Any) -> Any:
        """POST `body`. A 5xx is not retried (see `request`) unless `retry_server_errors=True`."""
        return _json_or_none(self.request("POST", path, json=body, **kw))

    def patch_json(self, path: str, body: Any, **kw: Any) -> Any:
        return _json_or_none(self.request("PATCH", path, json=body, **kw))

    def put_json(self, path: str, body: Any, **kw: Any) -> Any:
        return _json_or_none(self.request("PUT", path, json=body, **kw))

    def delete(self, path: str, body: Any = None, **kw: Any) -> Any:
        return _json_or_none(self.request("DELETE", path, json=body, **kw))

    def paginate(self, path: str, *, params: Mapping[str, Any] | None = None,
                 items_key: str | None = None, per_page: int = 100) -> Iterator[Any]:
        """Yield the items of every page, following `Link: <...>; rel="next"`.

        `items_key` names the list inside object-shaped pages (e.g. "artifacts"). At most
        `max_pages` pages are read, so a misbehaving server cannot loop us forever.
        """
        url: str | None = self.url(path)
        query: dict[str, Any] | None = {**(params or {}), "per_page": per_page}
        for _ in range(self.max_pages):
            resp = self.request("GET", url, params=query)  # type: ignore[arg-type]
            page = resp.json()
            items = page.get(items_key, []) if items_key and isinstance(page, dict) else page
            if not isinstance(items, list):
                raise GitHubError(resp.status_code, "expected a list in the page", strip_credentials(url or ""),
                                  method="GET")
            yield from items
            url = resp.links.get("next", {}).get("url")
            if not url:
                return
            if (urlsplit(url).scheme, urlsplit(url).netloc) != self._origin:
                raise GitHubError(resp.status_code, "pagination link points to another origin; not followed",
                                  strip_credentials(url), method="GET")
            query = None  # the next link already carries the query
        log.warning("stopped paginating %s after %d pages", path, self.max_pages)

    def download(self, path: str, *, max_bytes: int = 1 << 30) -> bytes:
        """GET a binary resource. GitHub answers some (artifact zips) with a 302 to a short-lived
        URL on another host: that hop is made without the Authorization header."""
        resp = self.request("GET", path, allow_redirects=False, stream=True)
        hops = 0
        while resp.is_redirect and hops < 5:
            hops += 1
            location = urljoin(resp.url, resp.headers["location"])
            resp.close()
            same_origin = (urlsplit(location).scheme, urlsplit(location).netloc) == self._origin
            resp = self.request("GET", location, allow_redirects=False, stream=True,
                                _session=None if same_origin else self._bare)
        if resp.is_redirect:
            raise GitHubError(resp.status_code, "too many redirects", resp.url, method="GET")
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in resp.iter_content(chunk_size=1 << 16):
                total += len(chunk)
                if total > max_bytes:
                    resp.close()
                    raise GitHubError(resp.status_code, f"download larger than {max_bytes} bytes; refused",
                                      resp.url, method="GET")
                chunks.append(chunk)
        except requests.RequestException as exc:  # the connection broke mid-download
            raise ServerError(0, self._redact(f"download interrupted ({type(exc).__name__}: {exc})"), resp.url,
                              method="GET") from None
        return b"".join(chunks)

    def close(self) -> None:
        self.session.close()
        self._bare.close()

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _never_sent(exc: requests.RequestException) -> bool:
    """The request cannot have reached the server: the connection was never made."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    from urllib3.exceptions import NewConnectionError

    return isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def _message_of(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or "")[:500].strip()
    if isinstance(body, dict):
        msg = str(body.get("message") or "")
        errors = body.get("errors")
        if errors:
            msg += f" {errors}"
        return msg[:2000]
    return str(body)[:500]


def _json_or_none(resp: requests.Response) -> Any:
    if resp.status_code == 204 or not resp.content:
        return None
    return resp.json()
