"""Tests of what the published image ships and leaves behind. The entrypoint runs here the way
tests/action runs it (the container's environment, the fake GitHub on loopback)."""

# The fake GitHub and its fixtures come from tests/github, shared rather than copied.
from github.conftest import blob_server, fake, openapi  # noqa: F401
