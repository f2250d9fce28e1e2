"""A/B on one machine: the base and the head of a change, run alternately, decided pair by pair.

Each side is a directory (a checkout) or a git ref of the current repository, materialised as a
detached worktree. The config is found in each side's own tree, so each side runs its own code; with
`install` lines, each side gets its own overlay environment. After one untimed warm-up run per side
(it builds the caches both sides share), the sides run in fresh processes in ABBA order (pair 1 base
then head, pair 2 head then base, ...), so a drift of the machine over time hits both alike.

After every pair the per-pair ratios of each run's median step time and peak memory go to the
sequential decision (compare/sequential.py); the loop stops when every metric is decided, at
`max_pairs`, or when the time budget is spent. The comparison document is the ordinary one (health,
curves and correctness against the base runs) with the A/B decisions in place of the stored-baseline
step-time and memory checks, and an `ab` block with the pairs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from . import results
from .config import ConfigError, load_config

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_CRASHED = 0, 1, 2, 3
SIDES = ("base", "head")


class ABError(Exception):
    """Bad input for an A/B run (exit 2): a side that is neither a directory nor a ref, and the like."""


class ABCrashed(Exception):
    """A side's run died without a record (exit 3); the message holds the end of its log."""


@dataclass
class Side:
    name: str  # "base" | "head"
    spec: str  # as given: a directory or a git ref
    root: Path  # the tree this side runs from
    sha: str | None = None
    config: Path | None = None  # the config in this side's tree; None: it has none
    python: str = sys.executable
    env: dict = field(default_factory=dict)
    runs: list[Path] = field(default_factory=list)
    launcher: "Launcher | None" = None

    @property
    def label(self) -> str:
        return f"{self.spec} ({self.sha[:7]})" if self.sha and self.sha[:7] not in self.spec else self.spec


# In a container action the workspace belongs to the runner's user, not the container's root, and git
# refuses such a repository ("dubious ownership") unless it is marked safe. Never prompt for credentials.
GIT_ENV = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*",
           "GIT_TERMINAL_PROMPT": "0"}


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=os.environ | GIT_ENV)


def repo_root(start: Path) -> Path | None:
    proc = _git(["rev-parse", "--show-toplevel"], start)
    return Path(proc.stdout.strip()) if proc.returncode == 0 else None


def resolve_ref(ref: str, repo: Path) -> str | None:
    """The commit `ref` names in `repo`, fetching it from `origin` when a shallow clone lacks it."""
    if ref.startswith("-"):  # never an option to git
        return None
    proc = _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], repo)
    if proc.returncode != 0:
        _git(["fetch", "--quiet", "--depth=1", "--no-tags", "origin", ref], repo)
        proc = _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], repo)
        if proc.returncode != 0:
            proc = _git(["rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}"], repo)
            if proc.returncode != 0:
                return None
    return proc.stdout.strip()


def materialise(name: str, spec: str, repo: Path | None, work: Path, stack: ExitStack) -> Side:
    """A side from a directory, or from a git ref checked out as a detached worktree under `work`."""
    path = Path(spec)
    if path.is_dir():
        root = repo_root(path) or path.resolve()
        sha = _git(["rev-parse", "HEAD"], root).stdout.strip() or None
        return Side(name, spec, root.resolve(), sha)
    if repo is None:
        raise ABError(f"--{name} {spec!r} is not a directory, and there is no git repository here to find it "
                      "as a ref in; give a checkout's directory or run inside the repository")
    sha = resolve_ref(spec, repo)
    if sha is None:
        raise ABError(f"--{name} {spec!r} is neither a directory nor a commit of {repo} (also not after "
                      "`git fetch origin`); give a branch, tag, sha or directory. In GitHub Actions, check out "
                      "with fetch-depth: 2 (a pull request's merge commit has the base as parent) or 0")
    tree = work / "trees" / name
    if tree.exists():
        _git(["worktree", "remove", "--force", str(tree)], repo)
        shutil.rmtree(tree, ignore_errors=True)
    tree.parent.mkdir(parents=True, exist_ok=True)
    proc = _git(["worktree", "add", "--detach", "--force", str(tree), sha], repo)
    if proc.returncode != 0:
        raise ABError(f"--{name} {spec!r}: git worktree add failed: {proc.stderr.strip()[-500:]}")
    stack.callback(lambda: (_git(["worktree", "remove", "--force", str(tree)], repo),
                            _git(["worktree", "prune"], repo)))
    return Side(name, spec, tree.resolve(), sha)


def config_in(side: Side, config: str, head_root: Path, shipped: Path | None) -> Path | None:
    """The config as it exists in this side's tree: the same path relative to the repository root
    (the head's tree defines it), or a shipped config by name (the same on both sides)."""
    if shipped is not None:
        return shipped
    given = Path(config)
    absolute = given if given.is_absolute() else (Path.cwd() / given)
    try:
        rel = absolute.resolve().relative_to(head_root)
    except ValueError:
        rel = given  # a path relative to the repository root
    candidate = (side.root / rel).resolve()
    # The config must stay inside the side's tree (a `..` path is not a config of this repository).
    if not candidate.is_relative_to(side.root) or not candidate.is_file():
        return None
    return candidate


# -- per-run statistics and the decision --------------------------------------------------------------------


def run_statistics(record: dict) -> dict[str, float | None]:
    """The per-run numbers A/B compares: the median step time after warmup and the peak memory
    (the largest device's peak allocation on a GPU, else the process's anonymous RSS)."""
    summary = record.get("summary", {})
    step = (summary.get("step_time_s") or {}).get("median")
    peak = summary.get("peak_memory") or {}
    devices = [d.get("max_allocated_mb") for d in peak.get("devices") or [] if d.get("max_allocated_mb")]
    memory = max(devices) if devices else peak.get("cpu_rss_anon_mb")
    return {"step_time": step, "memory": memory}


METRICS = {"step_time": ("ab.step_time", "median step time"), "memory": ("ab.memory", "peak memory")}
DEFAULT_LIMITS = {"step_time": 0.05, "memory": 0.05}


def log_ratios(base: list[dict], head: list[dict], metric: str) -> list[float]:
    out = []
    for b, h in zip(base, head):
        vb, vh = b.get(metric), h.get(metric)
        if isinstance(vb, (int, float)) and isinstance(vh, (int, float)) and vb > 0 and vh > 0:
            out.append(math.log(vh / vb))
    return out


def ab_limits(settings) -> dict[str, float]:
    """The relative limit of each A/B metric (`ab.step_time`, `ab.memory` in the thresholds)."""
    out = {}
    for metric, (check_id, _what) in METRICS.items():
        rel = settings.limit(check_id).relative
        out[metric] = rel if rel is not None else DEFAULT_LIMITS[metric]
    return out


def decisions(base: list[dict], head: list[dict], limits: dict[str, float], alpha: float, min_pairs: int,
              max_pairs: int, final: bool) -> dict[str, dict]:
    from .compare.sequential import decide

    out = {}
    for metric in METRICS:
        ratios = log_ratios(base, head, metric)
        d = decide(ratios, limits[metric], alpha, min_pairs, max_pairs, final=final) if ratios else None
        out[metric] = {"ratios": [math.exp(r) for r in ratios], "threshold": limits[metric],
                       **(d.to_json() if d else {"state": "unknown", "pairs": 0, "change": None, "ci": None,
                                                 "level": None})}
    return out


def stop_state(decided: dict[str, dict], final: bool) -> str | None:
    """Why the loop stops after this pair, or None to run another: "failed" (clearly worse on some
    metric: the verdict is settled whatever the others do), "decided" (every metric clearly within its
    limit), "undecided" (no pair left, or no time)."""
    states = [d["state"] for d in decided.values()]
    if "fail" in states:
        return "failed"
    if all(s == "pass" for s in states):
        return "decided"
    if final or "continue" not in states:
        return "undecided"
    return None


# -- the loop ---------------------------------------------------------------------------------------------


@dataclass
class Plan:
    config: str
    base: str
    head: str
    out: Path
    max_pairs: int = 10
    min_pairs: int = 3
    budget_s: float | None = None
    sets: list[str] = field(default_factory=list)
    install: list[str] = field(default_factory=list)
    alpha: float = 0.01  # one-sided error rate of each decision over all looks
    tier: str | None = None  # thresholds tier; None: the config's own
    progress: object = None  # callable(str) for one line per event, or None


def _say(plan: Plan, text: str) -> None:
    if plan.progress:
        plan.progress(text)


# The TRL class each training type loads lazily: the fork server imports it once per side.
TRAINER_CLASS = {"sft": "trl:SFTTrainer", "dpo": "trl:DPOTrainer", "grpo": "trl:GRPOTrainer",
                 "rloo": "trl:RLOOTrainer", "reward": "trl:RewardTrainer", "ppo": "trl.experimental.ppo:PPOTrainer"}


def gpu_driver_present() -> bool:
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/kfd"))  # NVIDIA, AMD ROCm


def fork_safe() -> bool:
    """Whether runs may be forked from a server that imported torch. Not with a GPU driver present:
    a library that asks for the device count at import initialises the driver, and a CUDA (or ROCm)
    driver initialised before fork() cannot be used in the child. There every run is a new interpreter."""
    return hasattr(os, "fork") and not gpu_driver_present()


class Launcher:
    """Starts one side's runs, each a fresh process: forked from the side's fork server
    (forkserver.py) where that is safe, else a new interpreter. Either way the run is
    `canary run CONFIG ...` of the side's own tree, in the side's environment."""

    def __init__(self, side: Side, preload: list[str], use_fork: bool, server_log: Path | None = None):
        self.side = side
        self.env = {k: v for k, v in os.environ.items() if k != "CANARY_WORKSPACE"} | side.env
        self.server: subprocess.Popen | None = None
        if use_fork:
            from . import forkserver

            # Its own process group: a server that dies mid-run leaves its run orphaned, and the
            # group is how that run is found and stopped (close) before the run starts again plainly.
            with open(server_log or os.devnull, "w") as log:
                self.server = subprocess.Popen(
                    [side.python, "-c", Path(forkserver.__file__).read_text(), *preload], cwd=side.root,
                    env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                    start_new_session=True)
        self.ready = self.server is None

    def wait_ready(self) -> None:
        """Wait for the server's imports (both sides' servers import at once, started one after the other)."""
        if not self.ready:
            self.ready = True
            if not self._reply():  # it could not start (an odd interpreter): plain processes instead
                self.close()

    def _reply(self) -> dict | None:
        try:
            line = self.server.stdout.readline()
            return json.loads(line) if line else None
        except (OSError, ValueError):
            return None

    def run(self, argv: list[str], log: Path) -> int:
        self.wait_ready()
        if self.server is not None and self.server.returncode is None:
            try:
                self.server.stdin.write(json.dumps({"argv": argv, "log": str(log)}) + "\n")
                self.server.stdin.flush()
                reply = self._reply()
                if reply is not None and "exit" in reply:
                    return int(reply["exit"])
            except OSError:
                pass
            self.close()  # the server died: the rest of this side's runs start plainly
        with open(log, "w") as fh:
            return subprocess.run([self.side.python, "-m", "canary_runner.cli", *argv], cwd=self.side.root,
                                  env=self.env, stdin=subprocess.DEVNULL, stdout=fh,
                                  stderr=subprocess.STDOUT).returncode

    def close(self) -> None:
        """End the server. The end of its input ends an idle one at once, and makes a busy one stop its
        run (SIGTERM, so the run records itself as interrupted) before it ends."""
        if self.server is None:
            return
        server, self.server = self.server, None
        try:
            server.stdin.close()
        except OSError:  # it is gone already
            pass
        from .forkserver import STOP_GRACE_S

        # Wait for its end without reaping it: until it is reaped, its id names no other process group.
        deadline = time.monotonic() + STOP_GRACE_S + 15
        while (server.returncode is None and time.monotonic() < deadline
               and os.waitid(os.P_PID, server.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None):
            time.sleep(0.05)
        # Whatever is left of its group goes now: a run orphaned by a server that died mid-run, or a
        # server that did not end.
        if server.returncode is None:
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        server.wait()
        server.stdout.close()


def _run_once(plan: Plan, side: Side, out: Path, warmup: bool = False,
              equivalence: bool = False) -> tuple[int, dict | None]:
    argv = ["run", str(side.config), "-o", str(out), "--no-progress", *(f"--set={s}" for s in plan.sets),
            *([] if equivalence else ["--no-equivalence"])]
    out.parent.mkdir(parents=True, exist_ok=True)
    code = side.launcher.run(argv, out.with_suffix(".log"))
    try:
        record = results.load_metrics(out)
    except results.MetricsFileError:
        record = None
    if warmup:
        shutil.rmtree(out, ignore_errors=True)
    return code, record


def run_ab(plan: Plan) -> tuple[dict, int]:
    """Run the A/B plan; returns (comparison document, exit code). Raises ABError on bad input."""
    from .cli import configs_dir

    if plan.min_pairs < 2 or plan.max_pairs < plan.min_pairs:
        raise ABError(f"--min-pairs {plan.min_pairs} / --pairs {plan.max_pairs}: need 2 <= min-pairs <= pairs")
    if plan.budget_s is not None and not (math.isfinite(plan.budget_s) and plan.budget_s > 0):
        raise ABError(f"--budget {plan.budget_s}: give a positive number of seconds, or leave it out for no limit")
    t0 = time.monotonic()
    out = plan.out.resolve()  # each side runs in its own tree: a relative path would land there
    out.mkdir(parents=True, exist_ok=True)
    repo = repo_root(Path.cwd())
    shipped = configs_dir() / f"{plan.config}.yaml"
    shipped = shipped if ("/" not in plan.config and not plan.config.endswith((".yaml", ".yml"))
                          and shipped.is_file()) else None
    with ExitStack() as stack:
        sides = {n: materialise(n, spec, repo, out, stack) for n, spec in zip(SIDES, (plan.base, plan.head))}
        for side in sides.values():
            side.config = config_in(side, plan.config, sides["head"].root, shipped)
        if sides["head"].config is None:
            raise ABError(f"{plan.config}: no such config in the head ({sides['head'].label}); give its path "
                          "relative to the repository root, or a shipped config name")
        if sides["base"].config is None:  # a new canary: the head runs once, with no verdict
            _say(plan, f"new canary: {plan.config} does not exist in the base ({sides['base'].label}); no verdict")
            sides["head"].launcher = Launcher(sides["head"], [], use_fork=False)
            code, _record = _run_once(plan, sides["head"], out / "head" / "pair-01")
            sides["head"].runs.append(out / "head" / "pair-01")
            doc = comparison(plan, sides, {"mode": "ab", "new_canary": True, **_sides_info(sides),
                                           "stopped": f"{plan.config} does not exist in the base: a new "
                                                      "canary, no verdict"})
            results.write_json_atomic(out / "comparison.json", doc)
            return doc, EXIT_OK if code == 0 else EXIT_CRASHED
        for side in sides.values():  # bad input is said before anything runs
            try:
                load_config(side.config, plan.sets)
            except ConfigError as e:
                raise ABError(f"{side.name} ({side.label}): {e}") from None
        if plan.install:
            from . import userenv

            for side in sides.values():
                try:
                    env = stack.enter_context(userenv.overlay(plan.install, cwd=side.root))
                except userenv.InstallError as e:
                    raise ABError(f"{side.name} ({side.label}): {e}") from None
                side.python, side.env = str(env.python), env.env(dict(os.environ))
                _say(plan, f"{side.name}: installed {userenv.describe(env.changed)}")
        use_fork = fork_safe()
        threads = _one_thread_on_cpu(plan, sides["head"].config)
        if threads:
            plan.sets = [*plan.sets, threads]
            _say(plan, "CPU run: torch intra-op threads set to 1 on both sides (train.cpu_threads); "
                       "idle OpenMP workers spinning against other processes made CPU step times swing by 30%")
        for side in sides.values():
            kind = load_config(side.config, plan.sets).training_type
            side.launcher = Launcher(side, [TRAINER_CLASS[kind]] if kind in TRAINER_CLASS else [], use_fork,
                                     out / f"forkserver-{side.name}.log")
            stack.callback(side.launcher.close)
        classes = None  # the head's equivalence classes run once, in its warm-up (they need no baseline)
        for side in sides.values():  # untimed: builds the caches and imports both sides use
            _say(plan, f"warm-up: {side.name} ({side.label})")
            _code, record = _run_once(plan, side, out / "warmup" / side.name, warmup=True,
                                      equivalence=side.name == "head")
            if side.name == "head" and record:
                classes = record.get("equivalence")
        limits = ab_limits(_settings(plan, sides))
        stats: dict[str, list[dict]] = {"base": [], "head": []}
        history, crashed, state = [], None, "continue"
        pair = 0
        while pair < plan.max_pairs:
            pair += 1
            order = SIDES if pair % 2 else SIDES[::-1]
            for name in order:
                side = sides[name]
                run_dir = out / name / f"pair-{pair:02d}"
                code, record = _run_once(plan, side, run_dir)
                if record is None or record.get("status") != "completed":
                    crashed = (name, run_dir, code, record)
                    break
                if name == "head" and classes and not side.runs:  # recorded with the head's first run
                    results.write_json_atomic(run_dir / "metrics.json", {**record, "equivalence": classes})
                side.runs.append(run_dir)
                stats[name].append(run_statistics(record))
            if crashed:
                break
            spent = time.monotonic() - t0
            final = pair >= plan.max_pairs or (plan.budget_s is not None and spent * (pair + 1) / pair > plan.budget_s)
            decided = decisions(stats["base"], stats["head"], limits, plan.alpha, plan.min_pairs,
                                plan.max_pairs, final)
            history.append({"pair": pair, "elapsed_s": round(spent, 2),
                            **{m: {k: d[k] for k in ("state", "change", "ci")} for m, d in decided.items()}})
            _say(plan, f"pair {pair}: " + ", ".join(f"{m} {_fmt_decision(d)}" for m, d in decided.items()))
            state = stop_state(decided, final) or state
            if state != "continue":
                break
        ab = {
            "mode": "ab", "new_canary": False, **_sides_info(sides),
            "order": "ABBA",
            "pairs": pair if not crashed else pair - 1,
            "min_pairs": plan.min_pairs, "max_pairs": plan.max_pairs, "budget_s": plan.budget_s,
            "alpha": plan.alpha,
            "elapsed_s": round(time.monotonic() - t0, 2),
            "stopped": _stopped(state, crashed, pair, plan, history[-1] if history else {}),
            "stopped_early": state in ("failed", "decided") and pair < plan.max_pairs,
            "cpu_threads": 1 if threads else None,
            "runs": {n: [str(p) for p in sides[n].runs] for n in SIDES},
            "per_run": stats,
            "decisions": decisions(stats["base"], stats["head"], limits, plan.alpha, plan.min_pairs,
                                   plan.max_pairs, True) if not crashed and stats["base"] else {},
            "history": history,
        }
        if crashed:
            name, run_dir, code, _record = crashed
            if (run_dir / "metrics.json").exists():
                sides[name].runs.append(run_dir)
            if not sides["head"].runs:
                log = run_dir.with_suffix(".log")
                tail = log.read_text(errors="replace").strip().splitlines()[-8:] if log.exists() else []
                raise ABCrashed(f"the {name} run of pair {pair} ({sides[name].label}) exited {code} without a "
                                f"record; the end of its log ({log}):\n" + "\n".join(tail))
        doc = comparison(plan, sides, ab)
    results.write_json_atomic(out / "comparison.json", doc)
    if crashed:
        return doc, EXIT_CRASHED
    return doc, EXIT_FAIL if doc["verdict"] == "fail" else EXIT_OK


def _one_thread_on_cpu(plan: Plan, config: Path) -> str | None:
    """`train.cpu_threads=1` for a CPU run whose config leaves the thread count to torch, else None."""
    cfg = load_config(config, plan.sets)
    on_cpu = cfg.train.device == "cpu" or (cfg.train.device == "auto" and not gpu_driver_present())
    return "train.cpu_threads=1" if on_cpu and cfg.train.cpu_threads is None else None


def _rel(side: Side) -> str | None:
    if side.config is None:
        return None
    try:
        return str(side.config.relative_to(side.root))
    except ValueError:
        return side.config.name


def _fmt_decision(d: dict) -> str:
    if d.get("change") is None:
        return d["state"]
    ci = f" (CI {d['ci'][0]:+.1%}..{d['ci'][1]:+.1%})" if d.get("ci") else ""
    return f"{d['change']:+.1%}{ci} {d['state']}"


WORSE = {"step_time": "clearly slower", "memory": "clearly more peak memory"}


def _stopped(state: str, crashed, pair: int, plan: Plan, last: dict) -> str:
    if crashed:
        return f"{crashed[0]} run of pair {pair} did not complete (exit {crashed[2]})"
    early = pair < plan.max_pairs
    when = f"after {pair} pair(s)" + (" (the minimum)" if pair == plan.min_pairs else "")
    if state == "failed":
        worse = " and ".join(WORSE[m] for m in METRICS if (last.get(m) or {}).get("state") == "fail")
        return f"{'stopped early' if early else 'stopped'} {when}: {worse}"
    if state == "decided":
        return f"{'stopped early' if early else 'stopped'} {when}: clearly within every limit"
    if pair >= plan.max_pairs:
        return f"no clear answer after the maximum of {plan.max_pairs} pairs"
    return f"time budget of {plan.budget_s:g}s spent after {pair} pair(s)"


def _sides_info(sides: dict[str, Side]) -> dict:
    return {n: {"spec": sides[n].spec, "sha": sides[n].sha, "config": _rel(sides[n])} for n in SIDES}


def comparison(plan: Plan, sides: dict[str, Side], ab: dict) -> dict:
    """The ordinary comparison of the head runs against the base runs, with A/B's decisions."""
    from .compare import engine
    from .compare.loading import load_side

    head = load_side([str(p) for p in sides["head"].runs], "current")
    base = load_side([str(p) for p in sides["base"].runs], "baseline") if sides["base"].runs else []
    return engine.compare(head, base, _settings(plan, sides), ab=ab)


def _settings(plan: Plan, sides: dict[str, Side]):
    """Thresholds as `canary compare` resolves them: the tier's defaults, then the head config's
    `thresholds:` block."""
    from .compare.settings import resolve

    cfg = load_config(sides["head"].config, plan.sets)
    return resolve(plan.tier or cfg.tier, cfg.thresholds, f"config:{cfg.name}#thresholds")
