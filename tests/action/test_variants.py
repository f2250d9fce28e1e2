"""The action's two variants must behave as one.

- `uses: org/rlhf-canary@v1`: a Docker container action. GitHub's runner pulls `runs.image` and starts it with
  its own `docker run` (actions/runner: ContainerActionHandler builds the mounts and the environment,
  DockerCommandManager.DockerRun the command line). `container_action` below builds that same command.
- `uses: org/rlhf-canary/gpu@v1`: a composite action whose one step runs the same image with
  `docker run --gpus`. `composite_action` runs gpu/action.yml's own `run:` script the way GitHub runs a
  `shell: bash` step, with the step's `env:` evaluated from the inputs.

No Docker engine runs here, so `docker` is stood in for (only that): tests/action/fake_docker.py, first on
PATH, records every call and then runs the real entrypoint.py with the container's environment, its
container paths mapped back to the host directories mounted there. Nothing trains: the `metrics:` input names
a finished run, compared with a `path:` baseline, and published to the fake GitHub on loopback (every request
validated against GitHub's OpenAPI description).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from compare.conftest import make_record, write_record

from .conftest import ENTRYPOINT, HEAD_SHA, MERGE_SHA, PR_NUMBER, REPO, parse_output_file, pr_event
from .fake_docker import install

ACTION = REPO / "action.yml"
GPU_ACTION = REPO / "gpu" / "action.yml"
GPU_ONLY_INPUTS = {"gpus", "image"}  # the composite's own inputs; everything else is action.yml's
MOUNT_TARGETS = ["/github/workspace", "/github/file_commands", "/github/workflow", "/github/home"]
INPUT_EXPR = re.compile(r"^\$\{\{ inputs\.([a-z0-9-]+) \}\}$")
OUTPUT_EXPR = re.compile(r"^\$\{\{ steps\.canary\.outputs\.([a-z0-9-]+) \}\}$")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def published_image() -> str:
    image = load(ACTION)["runs"]["image"]
    assert image.startswith("docker://"), image
    return image.removeprefix("docker://")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str
    workspace: Path
    calls: list[dict]  # what the docker stand-in was called with, in order

    @property
    def log(self) -> str:
        return self.stdout + self.stderr

    @property
    def run_call(self) -> dict:
        (call,) = [c for c in self.calls if c["argv"][1] == "run"]
        return call

    def env_names(self) -> list[str]:
        """The names passed with -e, without any `=VALUE`."""
        return [v.partition("=")[0] for f, v in self.run_call["options"] if f == "-e"]

    def option(self, flag: str) -> list[str]:
        return [v for f, v in self.run_call["options"] if f == flag]

    def files(self) -> dict[str, bytes]:
        """Everything in the workspace, by relative path."""
        return {p.relative_to(self.workspace).as_posix(): p.read_bytes()
                for p in sorted(self.workspace.rglob("*")) if p.is_file()}


class Runner:
    """One self-hosted runner's directories, laid out as actions/runner lays them out under _work, with the
    docker stand-in first on PATH."""

    def __init__(self, root: Path, *, repo: str, token: str, api_url: str):
        self.root, self.repo, self.token, self.api_url = root, repo, token, api_url
        work = root / "_work"
        self.workspace = work / "canary-app" / "canary-app"
        self.temp = work / "_temp"
        self.file_commands = self.temp / "_runner_file_commands"
        self.workflow_dir = self.temp / "_github_workflow"
        self.github_home = self.temp / "_github_home"
        self.user_home = root / "home" / "runner"  # the runner user's own HOME (a composite step's)
        for d in (self.workspace, self.file_commands, self.workflow_dir, self.user_home):
            d.mkdir(parents=True, exist_ok=True)
        self.bin = root / "bin"
        self.docker_config = {
            "log": str(root / "docker-calls.jsonl"),
            "python": sys.executable,
            "entrypoint": str(ENTRYPOINT),
            "images": [published_image()],  # what the registry holds
            # The image's ENV, offline and with the suite's model cache (nothing trains here anyway).
            "image_env": {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
                          "NVIDIA_VISIBLE_DEVICES": "all", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                          "CANARY_CACHE_DIR": os.environ["CANARY_CACHE_DIR"], "TRL_EXPERIMENTAL_SILENCE": "1"},
        }
        self.docker_log = install(self.bin, self.docker_config)
        self.steps = 0

    def docker(self, **changes) -> None:
        """Change what the docker stand-in knows (images in the registry, images on this machine)."""
        self.docker_config |= changes
        install(self.bin, self.docker_config)

    # -- what the runner provides to every step -----------------------------------------------------------
    def job_env(self, event_name: str, event: dict) -> dict[str, str]:
        """GITHUB_* and RUNNER_* of a pull_request job, with host paths, as a step sees them."""
        (self.workflow_dir / "event.json").write_text(json.dumps(event))
        return {
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_REPOSITORY": self.repo,
            "GITHUB_REPOSITORY_OWNER": self.repo.split("/")[0],
            "GITHUB_EVENT_NAME": event_name,
            "GITHUB_EVENT_PATH": str(self.workflow_dir / "event.json"),
            "GITHUB_SHA": MERGE_SHA,
            "GITHUB_REF": f"refs/pull/{PR_NUMBER}/merge",
            "GITHUB_REF_NAME": f"{PR_NUMBER}/merge",
            "GITHUB_HEAD_REF": "feature",
            "GITHUB_BASE_REF": "main",
            "GITHUB_RUN_ID": "4242",
            "GITHUB_RUN_NUMBER": "17",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_ACTOR": "octocat",
            "GITHUB_WORKFLOW": "canary",
            "GITHUB_JOB": "canary",
            "GITHUB_ACTION": "canary",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_API_URL": self.api_url,
            "GITHUB_GRAPHQL_URL": self.api_url + "/graphql",
            "RUNNER_OS": "Linux",
            "RUNNER_ARCH": "X64",
            "RUNNER_NAME": "gpu-runner-1",
            "RUNNER_ENVIRONMENT": "self-hosted",
            "RUNNER_TEMP": str(self.temp),
            "RUNNER_TOOL_CACHE": str(self.root / "_work" / "_tool"),
            "RUNNER_WORKSPACE": str(self.workspace.parent),
        }

    def step_files(self) -> dict[str, str]:
        """The file commands of one step (the runner names them with a GUID; a counter keeps the two
        variants' names equal here)."""
        self.steps += 1
        tag = f"{self.steps:08d}-0000-0000-0000-000000000000"
        files = {"GITHUB_OUTPUT": f"set_output_{tag}", "GITHUB_STEP_SUMMARY": f"step_summary_{tag}",
                 "GITHUB_ENV": f"set_env_{tag}", "GITHUB_PATH": f"add_path_{tag}", "GITHUB_STATE": f"save_state_{tag}"}
        for name in files:
            (self.file_commands / files[name]).touch()
        return {name: str(self.file_commands / f) for name, f in files.items()}

    def input_values(self, meta: dict, inputs: dict[str, str]) -> dict[str, str]:
        values = {}
        for name, spec in meta["inputs"].items():
            default = str(spec.get("default", ""))
            values[name] = self.token if default == "${{ github.token }}" else default
        unknown = set(inputs) - set(values)
        assert not unknown, f"not inputs of {meta['name']}: {unknown}"
        return values | inputs

    def _calls_since(self, start: int) -> list[dict]:
        lines = self.docker_log.read_text().splitlines() if self.docker_log.exists() else []
        return [json.loads(line) for line in lines[start:]]

    def _calls_so_far(self) -> int:
        return len(self.docker_log.read_text().splitlines()) if self.docker_log.exists() else 0

    def _result(self, proc: subprocess.CompletedProcess, outputs: dict[str, str], files: dict[str, str],
                start: int) -> Result:
        result = Result(proc.returncode, proc.stdout, proc.stderr, outputs,
                        Path(files["GITHUB_STEP_SUMMARY"]).read_text(), self.workspace, self._calls_since(start))
        assert self.token not in result.log, "the token was printed"
        return result

    # -- the container action: the runner's own docker run --------------------------------------------------
    def container_action(self, *, event: dict, inputs: dict[str, str]) -> Result:
        meta = load(ACTION)
        files = self.step_files()
        self.github_home.mkdir(exist_ok=True)  # the runner creates it
        environment = self.job_env("pull_request", event) | files
        for name, value in self.input_values(meta, inputs).items():
            environment[f"INPUT_{name.upper()}"] = value  # AddInputsToEnvironment: upper-cased, hyphens kept
        environment["HOME"] = str(self.github_home)
        # The runner's path translations: the last one added is tried first.
        mappings = [(self.workspace, "/github/workspace"), (self.file_commands, "/github/file_commands"),
                    (self.workflow_dir, "/github/workflow"), (self.github_home, "/github/home")]
        container_env = {name: translate(value, mappings) for name, value in environment.items()}
        argv = ["run", "--name", f"ghcrioorgrlhfcanary1_{uuid.uuid4().hex[:6]}", "--label", "0f3a9c",
                "--workdir", "/github/workspace", "--rm"]
        for name in container_env:
            argv += ["-e", name]  # values come from the docker client's environment
        argv += ["-e", "GITHUB_ACTIONS=true", "-e", "CI=true"]
        argv += ["-v", "/var/run/docker.sock:/var/run/docker.sock"]
        for host, target in reversed(mappings):  # added in this order: home, workflow, file_commands, workspace
            argv += ["-v", f"{host}:{target}"]
        argv.append(published_image())
        start = self._calls_so_far()
        proc = subprocess.run([str(self.bin / "docker"), *argv], env={"PATH": os.environ["PATH"], **container_env},
                              capture_output=True, text=True, timeout=300)
        return self._result(proc, parse_output_file(Path(files["GITHUB_OUTPUT"]).read_text()), files, start)

    # -- the composite action: gpu/action.yml's run script --------------------------------------------------
    def composite_action(self, *, event: dict, inputs: dict[str, str]) -> Result:
        meta = load(GPU_ACTION)
        (step,) = meta["runs"]["steps"]
        values = self.input_values(meta, inputs)
        step_env = {name: evaluate(expr, values) for name, expr in step["env"].items()}
        files = self.step_files()
        env = {
            # The runner's own process environment, which a `run:` step inherits.
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(self.user_home),
            "LANG": "C.UTF-8",
            "HOST_ONLY_SECRET": "the runner machine's own variable",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            **self.job_env("pull_request", event),
            **files,
            "GITHUB_ACTION_PATH": str(GPU_ACTION.parent),
            **step_env,
        }
        script = self.temp / f"{uuid.uuid4()}.sh"
        script.write_text(substitute(step["run"], values))  # as GitHub does: text pasted into the script
        start = self._calls_so_far()
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],  # shell: bash
                              cwd=self.workspace, env=env, capture_output=True, text=True, timeout=300)
        step_outputs = parse_output_file(Path(files["GITHUB_OUTPUT"]).read_text())
        outputs = {}
        for name, spec in meta["outputs"].items():
            m = OUTPUT_EXPR.match(spec["value"])
            assert m, spec["value"]
            if m[1] in step_outputs:
                outputs[name] = step_outputs[m[1]]
        return self._result(proc, outputs, files, start)


def translate(value: str, mappings: list[tuple[Path, str]]) -> str:
    """actions/runner's ContainerInfo.TranslateToContainerPath."""
    for host, target in mappings:
        if value == str(host):
            return target
        if value.startswith(f"{host}/"):
            return target + value[len(str(host)):]
    return value


def substitute(text: str, values: dict[str, str]) -> str:
    """`${{ inputs.<name> }}` inside a `run:` script, replaced by the value's text as GitHub replaces it (which
    is why the composite must have none: a value would become code)."""
    pattern = r"\$\{\{ inputs\.([a-z0-9-]+) \}\}"
    assert "${{" not in re.sub(pattern, "", text), "an expression this emulation does not evaluate"
    return re.sub(pattern, lambda m: values[m[1]], text)


def evaluate(expr: str, values: dict[str, str]) -> str:
    """A step `env:` value: the composite uses nothing but `${{ inputs.<name> }}` (or a literal)."""
    m = INPUT_EXPR.match(expr)
    if m:
        return values[m[1]]
    assert "${{" not in expr, f"unexpected expression {expr!r}"
    return expr


@pytest.fixture
def runners(tmp_path, fake):
    def make(name: str) -> Runner:
        return Runner(tmp_path / name, repo=fake.repo, token=fake.token, api_url=fake.url)
    return make


def timeless(value) -> str:
    """Text with its timestamps blanked: the two runs happen seconds apart."""
    text = value.decode() if isinstance(value, bytes) else value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?", "<time>", text)


def finished_runs(workspace: Path) -> dict[str, str]:
    """A finished current run and a baseline in the workspace: inputs that compare and report, no training."""
    write_record(workspace / "runs" / "current", make_record(run_id="current", seed=1))
    write_record(workspace / "runs" / "base", make_record(run_id="base", seed=2))
    return {"metrics": "runs/current", "baseline": "path:runs/base"}


# ------------------------------------------------------------------------------------------- metadata
def test_gpu_action_has_every_input_and_output_of_the_container_action():
    container, gpu = load(ACTION), load(GPU_ACTION)
    # Every input, word for word, in the same order; then the composite's own two.
    assert list(gpu["inputs"]) == [*container["inputs"], "gpus", "image"]
    for name, spec in container["inputs"].items():
        assert gpu["inputs"][name] == spec, f"gpu/action.yml input {name} differs from action.yml's: copy it"
    assert gpu["inputs"]["gpus"]["default"] == "all"
    assert gpu["inputs"]["image"]["default"] == published_image() == "ghcr.io/org/rlhf-canary:1"
    assert list(gpu["outputs"]) == list(container["outputs"])
    for name, spec in container["outputs"].items():
        assert gpu["outputs"][name]["description"] == spec["description"]
        assert gpu["outputs"][name]["value"] == f"${{{{ steps.canary.outputs.{name} }}}}"


def test_gpu_action_passes_inputs_only_through_the_environment():
    (step,) = load(GPU_ACTION)["runs"]["steps"]
    assert step["shell"] == "bash" and step["id"] == "canary"
    assert "${{" not in step["run"], "an expression in run: is pasted into the script: shell injection"
    expected = {f"INPUT_{name.upper()}": f"${{{{ inputs.{name} }}}}"
                for name in load(ACTION)["inputs"]}
    expected |= {"CANARY_GPUS": "${{ inputs.gpus }}", "CANARY_IMAGE": "${{ inputs.image }}"}
    assert step["env"] == expected
    assert "INPUT_GITHUB-TOKEN" in step["env"]


def test_both_action_files_pass_the_github_action_schema():
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-actions",
                           str(ACTION), str(GPU_ACTION)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------ one behaviour
def test_container_and_composite_variants_give_the_same_result(runners, fake):
    container, composite = runners("container"), runners("composite")
    event = pr_event(fake.repo)
    inputs = finished_runs(container.workspace)
    finished_runs(composite.workspace)

    a = container.container_action(event=event, inputs=inputs)
    b = composite.composite_action(event=event, inputs=inputs)

    assert a.returncode == b.returncode == 0, a.log + b.log
    assert a.option("--gpus") == [] and b.option("--gpus") == ["all"]  # the runner's docker run has no --gpus
    assert a.outputs == b.outputs
    assert a.outputs["verdict"] in ("pass", "warn") and a.outputs["report-path"]
    assert timeless(a.summary) == timeless(b.summary) and "rlhf-canary" in a.summary
    files_a, files_b = a.files(), b.files()
    assert files_a.keys() == files_b.keys()
    for name in files_a:
        if name.endswith(".png"):  # the report's plots: images of the same runs, compared as images are not
            assert files_a[name][:8] == files_b[name][:8] == b"\x89PNG\r\n\x1a\n", name
            continue
        assert timeless(files_a[name]) == timeless(files_b[name]), name
    # Both published the same check on the PR's head, and the second updated the first's sticky comment.
    first, second = sorted(fake.check_runs.values(), key=lambda r: r["id"])
    for key in ("name", "head_sha", "status", "conclusion", "output"):
        assert timeless(first[key]) == timeless(second[key]), key
    assert first["head_sha"] == HEAD_SHA
    assert len(fake.comments[PR_NUMBER]) == 1

    # The container got the same environment both ways (the composite adds its own GITHUB_ACTION_PATH); host
    # paths the runner leaves as they are (RUNNER_TEMP) differ only by each runner's root.
    env_a = {k: v.replace(str(container.root), "<root>") for k, v in a.run_call["container_env"].items()}
    env_b = {k: v.replace(str(composite.root), "<root>") for k, v in b.run_call["container_env"].items()
             if k != "GITHUB_ACTION_PATH"}
    assert env_a == env_b


def test_composite_docker_run_argv(runners, fake):
    runner = runners("composite")
    result = runner.composite_action(event=pr_event(fake.repo), inputs=finished_runs(runner.workspace))
    assert result.returncode == 0, result.log

    pull, run = result.calls
    assert pull["argv"] == ["docker", "pull", "ghcr.io/org/rlhf-canary:1"]  # pulled each time, as the runner does
    argv = run["argv"]
    assert argv[:6] == ["docker", "run", "--rm", "--gpus", "all", "--workdir"] and argv[6] == "/github/workspace"
    assert argv[-1] == "ghcr.io/org/rlhf-canary:1"
    # The runner's mounts, except the Docker socket.
    assert run["mounts"] == [[str(runner.workspace), "/github/workspace"],
                             [str(runner.file_commands), "/github/file_commands"],
                             [str(runner.workflow_dir), "/github/workflow"],
                             [str(runner.github_home), "/github/home"]]
    # Every input by name, hyphens kept; the wrapper's own inputs and the host's other variables are not passed.
    names = result.env_names()
    inputs = {f"INPUT_{n.upper()}" for n in load(ACTION)["inputs"]}
    assert inputs <= set(names) and "INPUT_GITHUB-TOKEN" in names
    assert not {"INPUT_GPUS", "INPUT_IMAGE", "CANARY_GPUS", "HOST_ONLY_SECRET", "PATH"} & set(names)
    assert {"GITHUB_WORKSPACE", "GITHUB_EVENT_PATH", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ENV",
            "GITHUB_PATH", "GITHUB_REPOSITORY", "GITHUB_API_URL", "RUNNER_OS", "RUNNER_TEMP"} <= set(names)
    assert len(names) == len(set(names))
    assert not any(runner.token in arg for arg in argv), "a value on the command line"
    # Paths rewritten as the runner rewrites them; what is not under a mount stays as it is.
    env = run["container_env"]
    assert env["GITHUB_WORKSPACE"] == "/github/workspace"
    assert env["GITHUB_EVENT_PATH"] == "/github/workflow/event.json"
    assert env["GITHUB_OUTPUT"].startswith("/github/file_commands/set_output_")
    assert env["GITHUB_STEP_SUMMARY"].startswith("/github/file_commands/step_summary_")
    assert env["HOME"] == "/github/home" and env["GITHUB_ACTIONS"] == env["CI"] == "true"
    assert env["RUNNER_TEMP"] == str(runner.temp)
    assert env["INPUT_GITHUB-TOKEN"] == runner.token


@pytest.mark.parametrize("gpus", ["device=1", '"device=0,1"', "2"])
def test_gpus_input_is_docker_run_gpus(runners, fake, gpus):
    runner = runners("composite")
    inputs = {**finished_runs(runner.workspace), "gpus": gpus}
    result = runner.composite_action(event=pr_event(fake.repo), inputs=inputs)
    assert result.returncode == 0, result.log
    assert result.option("--gpus") == [gpus]


def test_an_image_built_on_the_runner_runs_when_the_registry_has_none(runners, fake):
    """A fork's local build (`docker build -t rlhf-canary:dev .`): the pull fails, the local copy runs."""
    runner = runners("composite")
    runner.docker(images=["rlhf-canary:dev"], local_images=["rlhf-canary:dev"], registry_reachable=False)
    inputs = {**finished_runs(runner.workspace), "image": "rlhf-canary:dev"}
    result = runner.composite_action(event=pr_event(fake.repo), inputs=inputs)
    assert result.returncode == 0, result.log
    assert [c["argv"][1] for c in result.calls] == ["pull", "image", "run"]
    assert result.run_call["image"] == "rlhf-canary:dev"
    assert "::warning title=rlhf-canary (GPU)::could not pull rlhf-canary:dev" in result.stdout


# ------------------------------------------------------------------------------------ hostile inputs
def test_hostile_input_values_reach_the_entrypoint_as_data(runners, fake, tmp_path):
    tag = uuid.uuid4().hex
    pwned = Path(f"/tmp/pwned-{tag}")
    victim = tmp_path / "victim"
    victim.mkdir()
    hostile = (f"$(touch {pwned}) `touch {pwned}` ${{{{ github.token }}}} '; rm -rf {victim}; echo \"\n"
               f"::error::injected-{tag}\n%0A::warning::also-{tag}")
    runner = runners("composite")
    inputs = {**finished_runs(runner.workspace), "check-name": hostile, "comment-author": hostile}
    result = runner.composite_action(event=pr_event(fake.repo), inputs=inputs)

    assert not pwned.exists() and victim.is_dir()
    # Byte for byte, in the container's environment and in the environment the entrypoint ran with.
    for env in (result.run_call["container_env"], result.run_call["entrypoint_env"]):
        assert env["INPUT_CHECK-NAME"] == hostile and env["INPUT_COMMENT-AUTHOR"] == hostile
    assert not any(hostile in arg for arg in result.run_call["argv"])
    # The entrypoint used it as data: the check run carries the name, and no line of the log is a command
    # it did not write.
    assert any(r["name"] == hostile for r in fake.check_runs.values())
    assert not re.search(rf"^::(error|warning)[^\n]*(injected|also)-{tag}", result.log, re.M)
    assert result.returncode == 0, result.log


@pytest.mark.parametrize("inputs, words", [
    ({"gpus": "all; touch {pwned}"}, "the gpus input is not a docker --gpus value"),
    ({"gpus": "$(touch {pwned})"}, "the gpus input is not a docker --gpus value"),
    ({"gpus": ""}, "the gpus input is not a docker --gpus value"),
    ({"gpus": "--privileged"}, "the gpus input is not a docker --gpus value"),
    ({"image": "--privileged"}, "the image input is not an image reference"),
    ({"image": "ghcr.io/org/rlhf-canary:1 `touch {pwned}`"}, "the image input is not an image reference"),
    ({"image": "ghcr.io/org/rlhf-canary:1\n::error::x"}, "the image input is not an image reference"),
    ({"image": "ghcr.io/org/not-there:1"}, "could not pull ghcr.io/org/not-there:1"),
])
def test_bad_gpus_or_image_is_bad_input_and_runs_nothing(runners, fake, inputs, words):
    pwned = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    inputs = {k: v.format(pwned=pwned) for k, v in inputs.items()}
    runner = runners("composite")
    result = runner.composite_action(event=pr_event(fake.repo), inputs={"metrics": "runs/current", **inputs})
    assert result.returncode == 2, result.log
    (error,) = [line for line in result.stdout.splitlines() if line.startswith("::error")]
    assert words in error
    assert not [c for c in result.calls if c["argv"][1] == "run"] and not pwned.exists()
    assert not fake.requests


# ------------------------------------------------------------------------------------------------ docs
def test_readme_first_screen_shows_both_gpu_variants_and_the_image_v1_pulls():
    first_screen = "\n".join((REPO / "README.md").read_text().splitlines()[:40])
    assert "- uses: org/rlhf-canary@v1 " in first_screen and "- uses: org/rlhf-canary/gpu@v1 " in first_screen
    assert f"`{published_image()}`" in first_screen and "@v1" in first_screen
    assert "docs/gpu-runner.md" in first_screen


def test_docs_follow_the_image_and_its_cuda():
    """The GPU runner page names the image action.yml runs, the Dockerfile's CUDA base and the driver it needs."""
    dockerfile = (REPO / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M)[1]
    torch = re.search(r"^ARG TORCH_VERSION=(\S+)", dockerfile, re.M)[1]
    page = (REPO / "docs" / "gpu-runner.md").read_text()
    assert base.removeprefix("nvidia/cuda:") in page and torch in page
    assert "driver >= 580" in dockerfile and "**580 or newer**" in page
    for doc in ("README.md", "docs/action.md", "docs/gpu-runner.md"):
        text = (REPO / doc).read_text()
        assert published_image() in text, doc
        assert "rlhf-canary:v1" not in text, f"{doc}: the image's tags are 1.2.3, 1.2 and 1 (no v)"
