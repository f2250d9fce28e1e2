#!/usr/bin/env bash
# The image's CPU smoke test: run by .github/workflows/ci.yml on every pull request and by
# .github/workflows/release.yml on the built image before anything is pushed. No GPU, no network.
#
#   bash scripts/image_smoke.sh IMAGE          e.g. rlhf-canary:dev after `docker build -t rlhf-canary:dev .`
#
# 1. The command line inside the image: `canary run dpo_embedded` twice, `canary compare`, `canary report`.
# 2. The entrypoint run the way GitHub runs a container action: as root, the workspace mounted at
#    /github/workspace, a pull_request event file, $GITHUB_OUTPUT and $GITHUB_STEP_SUMMARY files, and every
#    input of action.yml as INPUT_<NAME> at its default, with no token (github-token empty) and the first
#    run as the baseline. It must exit 0, write the job summary and a verdict.
# 3. What the entrypoint wrote is readable and removable by this script's user, as the runner's own user
#    must be able to after a container action (uid 1001 on GitHub-hosted runners).
set -euo pipefail

IMAGE="${1:?usage: bash scripts/image_smoke.sh IMAGE}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d "${RUNNER_TEMP:-/tmp}/canary-smoke.XXXXXX")"
CLI="$WORK/cli"         # the command line's runs (written as root, removed by a root container at the end)
WS="$WORK/workspace"    # the action's workspace (owned by this script's user, like a checkout)
FILES="$WORK/files"     # the runner's file-command and workflow files
mkdir -p "$CLI" "$WS" "$FILES"
chmod 0777 "$CLI"

cleanup() {  # the CLI's runs and the container's home belong to root: empty $WORK from a container
    docker run --rm --network none --entrypoint find -v "$WORK:/smoke" "$IMAGE" /smoke -mindepth 1 -delete \
        >/dev/null 2>&1 || true
    rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

step() { echo; echo "== $*"; }
die() { echo "image smoke test FAILED: $*" >&2; exit 1; }

# Offline: the embedded workload needs no model hub; with no token the action makes no API call.
canary() {
    docker run --rm --network none --entrypoint canary -v "$CLI:/runs" -w /runs "$IMAGE" "$@"
}

# -- 1. the command line -----------------------------------------------------------------------------------
step "canary run dpo_embedded (baseline)"
canary run dpo_embedded -o runs/baseline --no-progress
step "canary run dpo_embedded (current)"
canary run dpo_embedded -o runs/current --no-progress
step "canary compare"
set +e
canary compare runs/current runs/baseline -o runs/comparison.json
code=$?
set -e
# 0 pass, 1 a regression: two runs on a shared CI machine may differ in timing; anything else is broken.
[[ $code -eq 0 || $code -eq 1 ]] || die "canary compare exited $code"
step "canary report"
canary report runs/comparison.json --format markdown -o runs/report.md
[[ -s "$CLI/runs/report.md" ]] || die "canary report wrote no runs/report.md"

# -- 2. the entrypoint as a container action ---------------------------------------------------------------
step "entrypoint: pull_request event, no token, defaults from action.yml"
mkdir -p "$WS/baseline-run" "$FILES/workflow" "$FILES/file_commands" "$FILES/home"
cp "$CLI/runs/baseline/metrics.json" "$WS/baseline-run/metrics.json"
echo "smoke" > "$WS/README.md"  # a checked-out file the action must leave alone
cat > "$FILES/workflow/event.json" <<'JSON'
{
  "action": "synchronize",
  "number": 7,
  "pull_request": {
    "number": 7,
    "head": {"sha": "1111111111111111111111111111111111111111", "ref": "feature",
             "repo": {"full_name": "octo-org/canary-smoke"}, "user": {"login": "octo-org"}},
    "base": {"sha": "3333333333333333333333333333333333333333", "ref": "main",
             "repo": {"full_name": "octo-org/canary-smoke", "default_branch": "main"}}
  },
  "repository": {"full_name": "octo-org/canary-smoke", "default_branch": "main"}
}
JSON
: > "$FILES/file_commands/output"
: > "$FILES/file_commands/summary"
chmod -R a+rwX "$FILES"  # the container's root writes them; the runner's user reads them back

# INPUT_<NAME> for every input at its action.yml default (upper-cased, hyphens kept, as the runner does),
# read by the image's own Python, with this test's values on top; the token's default (${{ github.token }})
# becomes empty: no token.
docker run --rm --network none --entrypoint python -v "$ROOT/action.yml:/action.yml:ro" "$IMAGE" -c '
import sys, yaml
meta = yaml.safe_load(open(sys.argv[1]))
values = {name: str(spec.get("default", "")) for name, spec in meta["inputs"].items()}
values = {name: "" if "${{" in value else value for name, value in values.items()}
values.update(arg.split("=", 1) for arg in sys.argv[2:])
for name, value in values.items():
    if "\n" in value:
        sys.exit(f"input {name}: a multi-line value cannot go through an env file")
    print(f"INPUT_{name.upper()}={value}")
' /action.yml config=dpo_embedded baseline=path:baseline-run fail-on=never > "$FILES/inputs.env"
grep -q '^INPUT_GITHUB-TOKEN=$' "$FILES/inputs.env" || die "no empty INPUT_GITHUB-TOKEN in the inputs"
grep -q '^INPUT_CONFIG=dpo_embedded$' "$FILES/inputs.env" || die "INPUT_CONFIG is not in the inputs"

set +e
docker run --rm --network none \
    --workdir /github/workspace \
    -v "$WS:/github/workspace" \
    -v "$FILES/workflow:/github/workflow" \
    -v "$FILES/file_commands:/github/file_commands" \
    -v "$FILES/home:/github/home" \
    --env-file "$FILES/inputs.env" \
    -e HOME=/github/home \
    -e CI=true \
    -e GITHUB_ACTIONS=true \
    -e GITHUB_WORKSPACE=/github/workspace \
    -e GITHUB_EVENT_NAME=pull_request \
    -e GITHUB_EVENT_PATH=/github/workflow/event.json \
    -e GITHUB_OUTPUT=/github/file_commands/output \
    -e GITHUB_STEP_SUMMARY=/github/file_commands/summary \
    -e GITHUB_REPOSITORY=octo-org/canary-smoke \
    -e GITHUB_REPOSITORY_OWNER=octo-org \
    -e GITHUB_SHA=2222222222222222222222222222222222222222 \
    -e GITHUB_REF=refs/pull/7/merge \
    -e GITHUB_REF_NAME=7/merge \
    -e GITHUB_HEAD_REF=feature \
    -e GITHUB_BASE_REF=main \
    -e GITHUB_RUN_ID=1 \
    -e GITHUB_RUN_NUMBER=1 \
    -e GITHUB_RUN_ATTEMPT=1 \
    -e GITHUB_ACTOR=octocat \
    -e GITHUB_WORKFLOW=smoke \
    -e GITHUB_JOB=smoke \
    -e GITHUB_ACTION=__rlhf-canary \
    -e GITHUB_SERVER_URL=https://github.com \
    -e GITHUB_API_URL=https://api.github.com \
    -e GITHUB_GRAPHQL_URL=https://api.github.com/graphql \
    -e RUNNER_OS=Linux \
    -e RUNNER_ARCH=X64 \
    -e RUNNER_NAME=smoke \
    -e RUNNER_ENVIRONMENT=github-hosted \
    "$IMAGE"
code=$?
set -e
[[ $code -eq 0 ]] || die "the entrypoint exited $code (expected 0: fail-on never, no token)"
[[ -s "$FILES/file_commands/summary" ]] || die "the entrypoint wrote no job summary"
grep -q "dpo_embedded" "$FILES/file_commands/summary" || die "the job summary does not name the config"
verdict="$(awk '/^verdict<</ { getline; print; exit }' "$FILES/file_commands/output")"
[[ "$verdict" =~ ^(pass|warn|fail)$ ]] || die "verdict output is '$verdict' (expected pass, warn or fail)"
report="$(awk '/^report-path<</ { getline; print; exit }' "$FILES/file_commands/output")"
[[ -n "$report" && -s "$WS/$report" ]] || die "report-path '$report' is not a file in the workspace"
echo "entrypoint: exit 0, verdict $verdict, report $report, summary $(wc -c < "$FILES/file_commands/summary") bytes"

# -- 3. what the action wrote belongs to everyone ----------------------------------------------------------
step "workspace modes: readable and removable by $(id -un) (uid $(id -u))"
closed="$(find "$WS/canary-results" \( \( -type d ! -perm -0007 \) -o \( -type f ! -perm -0006 \) \) -print)"
[[ -z "$closed" ]] || die "paths the runner's user cannot read or remove:"$'\n'"$closed"
[[ "$(cat "$WS/README.md")" == "smoke" ]] || die "the entrypoint changed a file it did not create"
find "$WS/canary-results" -type f -exec cat {} + > /dev/null || die "a result file is unreadable"
rm -rf "$WS/canary-results" || die "the runner's user cannot delete canary-results/"
[[ ! -e "$WS/canary-results" ]] || die "canary-results/ is still there after rm -rf"

echo
echo "image smoke test passed: $IMAGE"
