"""A stand-in for the `docker` command, for running the action's image where no Docker engine exists.

`install` writes a `docker` command (put its directory first on PATH) that calls
`main([CONFIG.json, <docker arguments>])`. It understands what the action's two variants call:

  docker pull IMAGE                  recorded; exit 0 for an image CONFIG lists, unless the registry is down
  docker image inspect IMAGE         exit 0 when CONFIG lists IMAGE as already on the machine
  docker run [OPTIONS] IMAGE         recorded, then the image's ENTRYPOINT (entrypoint.py) runs for real

For `run` it does what the engine would: the container's environment is the image's ENV, then each `-e NAME=VALUE`,
and each `-e NAME` with the value from this process's own environment (left out when unset); the working
directory and the `-v HOST:CONTAINER` mounts come from the options. As there is no container, every
container path is mapped back to its host directory (in the environment's values and the working directory)
and entrypoint.py runs in a subprocess with that environment. Any option it does not know fails the call,
as an unknown flag fails docker, so the argv the tests assert is all there is.

Each call appends one JSON line to CONFIG["log"]: the argv, this process's environment, and for `run` the
parsed options and the environment the entrypoint was given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

VALUE_OPTIONS = {"--name", "--label", "--workdir", "-w", "--gpus", "-e", "--env", "-v", "--volume", "--network"}
FLAG_OPTIONS = {"--rm"}


def install(bin_dir: Path, config: dict) -> Path:
    """Write CONFIG next to a `docker` wrapper in bin_dir (put bin_dir first on PATH). Returns the log path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    config_path = bin_dir / "fake-docker.json"
    config_path.write_text(json.dumps(config))
    wrapper = bin_dir / "docker"
    # Python itself, not a /bin/sh wrapper: dash drops variables whose names have a hyphen (INPUT_GITHUB-TOKEN),
    # which docker, a Go program, keeps.
    wrapper.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                       f"import fake_docker\nsys.exit(fake_docker.main([{str(config_path)!r}, *sys.argv[1:]]))\n")
    wrapper.chmod(0o755)
    return Path(config["log"])


def parse_run(args: list[str]) -> dict:
    """docker run's options -> {"options": [(flag, value)], "image": str, "args": [...]}."""
    options, i = [], 0
    while i < len(args) and args[i].startswith("-"):
        flag = args[i]
        if flag in FLAG_OPTIONS:
            options.append((flag, None))
            i += 1
        elif flag in VALUE_OPTIONS and i + 1 < len(args):
            options.append((flag, args[i + 1]))
            i += 2
        else:
            raise SystemExit(f"fake docker: unknown flag or missing value: {flag}")
    if i >= len(args):
        raise SystemExit("fake docker: docker run needs an image")
    return {"options": options, "image": args[i], "args": args[i + 1:]}


def split_volume(spec: str) -> tuple[str, str]:
    """HOST:CONTAINER[:ro|:rw] -> (host, container)."""
    for suffix in (":ro", ":rw"):
        if spec.endswith(suffix):
            spec = spec[: -len(suffix)]
    host, sep, container = spec.rpartition(":")
    if not sep or not host.startswith("/") or not container.startswith("/"):
        raise SystemExit(f"fake docker: not a bind mount HOST:CONTAINER: {spec!r}")
    return host, container


def container_env(options: list[tuple[str, str | None]], image_env: dict[str, str]) -> dict[str, str]:
    env = dict(image_env)
    for flag, spec in options:
        if flag not in ("-e", "--env"):
            continue
        name, sep, value = spec.partition("=")
        if sep:
            env[name] = value
        elif name in os.environ:  # `-e NAME`: the value from the client's environment, as docker does
            env[name] = os.environ[name]
    return env


def to_host(value: str, mounts: list[tuple[str, str]]) -> str:
    """A container path under a mount -> the host path (the longest mount target wins)."""
    for host, target in sorted(mounts, key=lambda m: len(m[1]), reverse=True):
        if value == target:
            return host
        if value.startswith(target + "/"):
            return host + value[len(target):]
    return value


def run(config: dict, args: list[str], record: dict) -> int:
    parsed = parse_run(args)
    options = parsed["options"]
    mounts = [split_volume(v) for f, v in options if f in ("-v", "--volume")]
    workdirs = [v for f, v in options if f in ("--workdir", "-w")]
    env = container_env(options, config["image_env"])
    host_env = {name: to_host(value, mounts) for name, value in env.items()}
    cwd = to_host(workdirs[-1], mounts) if workdirs else "/"
    record.update(image=parsed["image"], options=options, mounts=mounts, container_env=env,
                  entrypoint_env=host_env, cwd=cwd)
    append(config["log"], record)
    if parsed["image"] not in config["images"]:
        print(f"fake docker: Unable to find image '{parsed['image']}'", file=sys.stderr)
        return 125
    if not Path(cwd).is_dir():
        print(f"fake docker: working directory {workdirs} is not a mounted directory", file=sys.stderr)
        return 126
    # The image's exec-form ENTRYPOINT, with the container's environment and working directory.
    return subprocess.run([config["python"], config["entrypoint"], *parsed["args"]], env=host_env, cwd=cwd).returncode


def append(log: str, record: dict) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    args = argv[1:]
    record = {"argv": ["docker", *args], "env": dict(os.environ)}
    if args[:1] == ["run"]:
        return run(config, args[1:], record)
    append(config["log"], record)
    if args[:1] == ["pull"] and len(args) == 2:
        return 0 if config.get("registry_reachable", True) and args[1] in config["images"] else 1
    if args[:2] == ["image", "inspect"] and len(args) == 3:
        return 0 if args[2] in config.get("local_images", []) else 1
    print(f"fake docker: unsupported call: {args}", file=sys.stderr)
    return 125


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
