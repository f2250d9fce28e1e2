#!/usr/bin/env bash
# The GPU variant's one step: run the rlhf-canary image with `docker run --gpus`, giving the container what
# GitHub's runner gives a Docker container action (actions/runner ContainerActionHandler + DockerCommandManager):
#   mounts   workspace -> /github/workspace, the file-commands directory ($GITHUB_OUTPUT's, also holding
#            GITHUB_STEP_SUMMARY, GITHUB_ENV, GITHUB_PATH, GITHUB_STATE) -> /github/file_commands,
#            $RUNNER_TEMP/_github_home -> /github/home, the event file's directory -> /github/workflow
#   env      GITHUB_*, RUNNER_* and INPUT_* by name (-e NAME: values never enter a command line), each value
#            that is one of the mounted host paths, or below one, rewritten to its container path, as the runner
#            does; HOME=/github/home, GITHUB_ACTIONS=true, CI=true
#   workdir  /github/workspace
# Deliberately not done: the runner also mounts /var/run/docker.sock into a container action; the canary never
# calls Docker, and the socket would give code under test root on the host.
#
# Input: the step's environment only (gpu/action.yml maps every input there): CANARY_GPUS, CANARY_IMAGE and
# INPUT_<NAME> (upper-cased, hyphens kept: INPUT_GITHUB-TOKEN). Nothing here is ever evaluated by a shell.
set -euo pipefail

fail() {  # exit 2 (bad input or usage) with one error the job log shows
    echo "::error title=rlhf-canary (GPU)::$1"
    exit 2
}

# -- inputs of the wrapper itself: checked against docker's own syntax, so they can be printed safely --------
image="${CANARY_IMAGE:-}"
image="${image#docker://}"
gpus="${CANARY_GPUS:-}"
if [[ ! $image =~ ^[A-Za-z0-9][A-Za-z0-9._/:@-]*$ ]]; then
    fail "the image input is not an image reference (e.g. ghcr.io/org/rlhf-canary:1 or ghcr.io/org/rlhf-canary@sha256:...)"
fi
if [[ ! $gpus =~ ^[A-Za-z0-9\"][A-Za-z0-9\",=._:-]*$ ]]; then  # no leading "-": never read as an option
    fail "the gpus input is not a docker --gpus value (all, a count such as 2, device=1, or '\"device=0,1\"')"
fi
for name in GITHUB_WORKSPACE GITHUB_OUTPUT GITHUB_EVENT_PATH RUNNER_TEMP; do
    if [[ -z ${!name:-} ]]; then
        fail "$name is not set: this action runs as a step of a GitHub Actions job"
    fi
done
command -v docker >/dev/null || fail "docker is not installed on this runner (see docs/gpu-runner.md)"

# -- the mounts, in the order the runner matches them (last added first) -------------------------------------
home="$RUNNER_TEMP/_github_home"
mkdir -p -- "$home"
hosts=("$GITHUB_WORKSPACE" "$(dirname -- "$GITHUB_OUTPUT")" "$(dirname -- "$GITHUB_EVENT_PATH")" "$home")
targets=(/github/workspace /github/file_commands /github/workflow /github/home)

translated=""
to_container() {  # the runner's TranslateToContainerPath; sets $translated (no $(...): it would eat trailing newlines)
    local value="$1" i
    for i in "${!hosts[@]}"; do
        if [[ $value == "${hosts[i]}" ]]; then
            translated="${targets[i]}"
            return
        fi
        if [[ $value == "${hosts[i]}"/* ]]; then
            translated="${targets[i]}${value:${#hosts[i]}}"
            return
        fi
    done
    translated="$value"
}

args=(run --rm --gpus "$gpus" --workdir /github/workspace)
rewritten=()  # NAME=VALUE for the docker client's environment: only path values the runner would rewrite
while IFS= read -r -d '' entry; do
    name="${entry%%=*}"
    case "$name" in
        GITHUB_ACTIONS) continue ;;  # set below, as the runner sets it
        GITHUB_* | RUNNER_* | INPUT_*) ;;
        *) continue ;;
    esac
    value="${entry#*=}"
    to_container "$value"
    if [[ $translated != "$value" ]]; then
        rewritten+=("$name=$translated")
    fi
    args+=(-e "$name")  # by name: docker reads the value from its own environment
done < <(env -0)
args+=(-e HOME=/github/home -e GITHUB_ACTIONS=true -e CI=true)
for i in "${!hosts[@]}"; do
    args+=(-v "${hosts[i]}:${targets[i]}")
done

# -- the image: pulled each time, as the runner pulls a container action's image at the start of the job ------
if ! docker pull "$image"; then
    if docker image inspect "$image" >/dev/null 2>&1; then
        echo "::warning title=rlhf-canary (GPU)::could not pull $image; running the copy already on this runner"
    else
        fail "could not pull $image: check the image input, and that this runner can reach the registry (docker login for a private image)"
    fi
fi

echo "rlhf-canary: docker run --gpus $gpus $image (workspace, file commands, home and event mounted as for a container action)"
exec env -- "${rewritten[@]}" docker "${args[@]}" "$image"
