"""GitHub layer: REST client, Actions context, and publishing (comments, checks, statuses)."""

from .client import (
    Conflict,
    GitHubClient,
    GitHubError,
    NotFound,
    PermissionDenied,
    RateLimited,
    RetryPolicy,
)
from .context import ActionsContext, ContextError, in_actions, load_context
from .publish import (
    ChannelResult,
    Publisher,
    PublishResult,
    complete_check_run,
    find_pull_request,
    resolve_login,
    set_commit_status,
    start_check_run,
    sticky_marker,
    upsert_sticky_comment,
)

__all__ = [
    "ActionsContext", "ChannelResult", "Conflict", "ContextError", "GitHubClient", "GitHubError", "NotFound",
    "PermissionDenied", "PublishResult", "Publisher", "RateLimited", "RetryPolicy", "complete_check_run",
    "find_pull_request", "in_actions", "load_context", "resolve_login", "set_commit_status", "start_check_run",
    "sticky_marker", "upsert_sticky_comment",
]
