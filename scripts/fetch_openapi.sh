#!/usr/bin/env bash
# Fetch GitHub's OpenAPI description (npm package @octokit/openapi, exact version) into
# .cache/openapi/. The GitHub-layer tests validate every request against it.
#   usage: scripts/fetch_openapi.sh [DEST_DIR]     (default: <repo>/.cache/openapi)
# Prints the path of api.github.com.json. Idempotent: does nothing when the file is there.
set -euo pipefail

# Pinned: a new spec can change what the validator accepts; bump on purpose.
OCTOKIT_OPENAPI_VERSION="${OCTOKIT_OPENAPI_VERSION:-23.0.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/.cache/openapi}"
VERSIONED="$DEST/$OCTOKIT_OPENAPI_VERSION"
TARGET="$VERSIONED/api.github.com.json"

if [[ -s "$TARGET" ]]; then
    echo "$TARGET"
    exit 0
fi
command -v npm >/dev/null || { echo "fetch_openapi: npm is required (apt-get install npm)" >&2; exit 2; }

mkdir -p "$VERSIONED"
TMP="$(mktemp -d "$DEST/.fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# npm pack downloads the registry tarball (integrity-checked by npm) without running any scripts.
TARBALL="$(cd "$TMP" && npm pack --silent "@octokit/openapi@${OCTOKIT_OPENAPI_VERSION}" 2>/dev/null | tail -n1)"
tar -xzf "$TMP/$TARBALL" -C "$TMP" package/generated/api.github.com.json
# Rename into place last so a killed fetch never leaves a truncated spec behind.
mv "$TMP/package/generated/api.github.com.json" "$TARGET.part"
mv "$TARGET.part" "$TARGET"
echo "$TARGET"
