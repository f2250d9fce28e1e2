"""`canary run`: config -> workload -> trainer -> collector -> metrics.json.

Whatever happens after setup (a finished run, an exception, an OOM, SIGTERM/SIGINT, a timeout),
a metrics.json with the right status and every step done so far is written before returning.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from . import results
from .config import CanaryConfig
from .workload import embedded

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_CRASHED = 0, 1, 2, 3


class Interrupted(BaseException):
    """SIGTERM/SIGINT during a run (BaseException, so trainer code's `except Exception` lets it through)."""


class SetupError(Exception):
    """Bad input found while building the workload or trainer (exit 2, no run happened)."""


class RecordNotWritten(Exception):
    """The run's record could not go where it was asked to (`-o` is a file, read-only, a full disk).
    It went to `where` instead (None: nowhere could be written); exit 3, the message says where."""

    def __init__(self, message: str, record: dict, where: Path | None):
        super().__init__(message)
        self.record, self.where = record, where


@contextmanager
def _signals_raise():
    """SIGTERM/SIGINT raise Interrupted once. A second signal (a runner that sends SIGTERM then SIGINT,
    a double Ctrl-C) must not interrupt the writing of the record, so it is ignored, as is any signal
    once `state["writing"]` is set."""
    state = {"raised": False, "writing": False}

    def handler(signum, _frame):
        if state["raised"] or state["writing"]:
            return
        state["raised"] = True
        raise Interrupted(f"received {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield state
    finally:
        for s, h in previous.items():
            # Once stopped by a signal, the process is on its way out: the repeats of that signal that
            # follow (a CI runner's cancel sends several) must not kill it before it says how it ended.
            signal.signal(s, signal.SIG_IGN if state["raised"] else h)


def _fallback_dir() -> Path:
    """A fresh directory for a run's files when the one asked for cannot be written."""
    base = os.environ.get("RUNNER_TEMP") or tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix="canary-run-", dir=base))


def _writable_out_dir(out_dir: Path) -> tuple[Path, str | None]:
    """`out_dir`, created and tried with a small write; else a fallback directory and why (said on
    stderr now, and again at the end). Nowhere writable at all is a SetupError: nothing has run yet."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".canary-probe-", dir=out_dir)
        try:
            os.write(fd, b"{}\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
        return out_dir, None
    except OSError as e:
        why = f"{out_dir} cannot be written ({e.strerror or e})"
    try:
        fallback = _fallback_dir()
    except OSError as e:
        raise SetupError(f"{why}, and neither can a temporary directory ({e.strerror or e}): pass a writable "
                         "-o / output-dir or free some disk space") from None
    print(f"canary: warning: {why}; this run's files go to {fallback} instead", file=sys.stderr, flush=True)
    return fallback, why


def _write_record_elsewhere(record: dict, steps: list[dict], why: str) -> Path:
    """metrics.json and steps.jsonl in a fallback directory; RecordNotWritten(where=None) if that fails too."""
    try:
        where = _fallback_dir()
        results.write_json_atomic(where / "metrics.json", record)
        with open(where / "steps.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(results.encode(rec)) + "\n" for rec in steps)
        return where
    except OSError as e:
        raise RecordNotWritten(
            f"{why}; the record could not be written anywhere else either ({e.strerror or e}): the run "
            f"{record['status']} after {record['run']['steps_completed']} step(s). Free some disk space and "
            "re-run.", record, None) from None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def git_sha() -> str | None:
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _offline_if_embedded(cfg: CanaryConfig) -> None:
    """An all-embedded or local workload never needs the Hub: say so, so nothing waits on a network."""
    from .plugins import is_import_string

    names = [cfg.model.name, cfg.model.tokenizer, cfg.model.reward_model, cfg.model.value_model, cfg.dataset.name]
    if all(n is None or embedded.is_embedded(n) or Path(n).exists() or is_import_string(n) for n in names):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _device(cfg: CanaryConfig):
    import torch

    want = cfg.train.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SetupError("train.device is 'cuda' but no CUDA device is visible; use device: auto or cpu")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if cfg.train.precision == "fp16":
        # accelerate turns fp16 off on the CPU without a word: the run would be plain fp32.
        raise SetupError("train.precision fp16 needs a CUDA device: on the CPU it silently runs in fp32 (no "
                         "autocast, no loss scaling), so this canary would test nothing of fp16. Use fp32 or "
                         "bf16 on the CPU, or run it on a GPU runner")
    return None


def build_trainer(cfg: CanaryConfig, out_dir: Path, collector, device=None):
    """Workload and TRL trainer for `cfg`, instrumented by `collector`. Bad input raises SetupError."""
    from . import heldout
    from .plugins import PluginError
    from .trainers import adapter
    from .trainers.common import AdapterError, Workload
    from .workload import sources

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.set_seed(cfg.seed)
    try:
        tokenizer = sources.load_tokenizer(cfg.model.tokenizer or cfg.model.name)
        dataset = sources.load_dataset(cfg.dataset.name, cfg.training_type, cfg.dataset.split,
                                       cfg.dataset.max_rows, cfg.dataset.format)
        w = Workload(cfg, tokenizer, dataset, Path(out_dir), use_cpu=device is None)
        trainer = adapter(cfg.training_type).build(w, collector)
        heldout.attach(cfg, trainer, tokenizer, collector)
    except (sources.WorkloadError, AdapterError, PluginError) as e:
        raise SetupError(str(e)) from None
    # The collector reports progress; the Trainer's own printing of every log would flood CI logs.
    trainer.remove_callback(transformers.PrinterCallback)
    trainer.remove_callback(transformers.trainer_callback.ProgressCallback)
    return trainer


def run(cfg: CanaryConfig, out_dir: Path, config_path: str | None = None, on_step=None,
        callbacks=(), resume_from: str | None = None) -> tuple[dict, int]:
    """Train the canary and write `out_dir/metrics.json`. Returns (record, exit code).

    `callbacks` are extra TrainerCallbacks (benchmarks inject slowdowns, tests inject faults, the
    equivalence classes stop and checkpoint); `resume_from` a Trainer checkpoint to resume from.
    """
    started_at, t0 = _now(), time.perf_counter()
    asked = Path(out_dir)
    out_dir, unwritable = _writable_out_dir(asked)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # PPO lives in trl.experimental; the pin is deliberate
    _offline_if_embedded(cfg)
    from .plugins import use_workspace

    use_workspace()  # the user's code, named in the config, imports from the config's repository

    from .collect.collector import CanaryTimeout, StepCollector
    from .collect.env import fingerprint
    from .collect.invariants import InvariantRecorder
    from .trainers import adapter

    import torch

    threads_before = torch.get_num_threads()
    if cfg.train.cpu_threads:
        torch.set_num_threads(cfg.train.cpu_threads)
    env = fingerprint()
    module = adapter(cfg.training_type)
    status, error, trainer = "completed", None, None
    collector = invariants = None
    train_t0 = None
    with _signals_raise() as signals:
        try:
            try:
                device = _device(cfg)
                collector = StepCollector(
                    out_dir / "steps.jsonl", cfg.train.warmup_steps, cfg.train.timeout_s, deadline_from=t0,
                    device=device, on_step=on_step,
                    derive=(lambda r: module.derive(r, cfg)) if hasattr(module, "derive") else None,
                )
                trainer = build_trainer(cfg, out_dir, collector, device)
                invariants = InvariantRecorder(cfg.training_type)  # reference fingerprints, log-prob probe
                invariants.attach(trainer)
                trainer.add_callback(invariants)
                for cb in callbacks:
                    trainer.add_callback(cb)
            except SetupError:
                if collector is not None:
                    collector.close()
                raise
            if cfg.train.gc_freeze:
                # Setup leaves ~400k long-lived objects; without freezing, every full collection walks
                # them and step time measures the import footprint (PPO calls gc.collect() twice a step).
                gc.collect()
                gc.freeze()
            train_t0 = time.perf_counter()
            trainer.train(**({"resume_from_checkpoint": resume_from} if resume_from else {}))
            if collector.timed_out:
                status = "timeout"
                error = {"type": "Timeout", "message": f"stopped after train.timeout_s={cfg.train.timeout_s}s"}
        except SetupError:
            raise
        except (Interrupted, KeyboardInterrupt, Exception) as e:
            # First thing: no signal may interrupt the handling of how the run ended. A SIGTERM that
            # lands while a crash's traceback is being formatted (torchrun stops the other ranks when
            # one dies) would otherwise escape here, and the rank would leave no record at all.
            signals["writing"] = True
            status, error = _how_it_ended(e)
        finally:
            if cfg.train.gc_freeze:
                gc.unfreeze()
        signals["writing"] = True  # from here on the record is being written: no signal interrupts it
        torch.set_num_threads(threads_before)  # in-process callers (calibrate, tests) get theirs back
        record, steps = _finish(cfg, collector, status, error, config_path, env, started_at, t0, train_t0)
        record["heldout"] = _heldout_result(trainer)
        if invariants is not None:
            record["invariants"] = invariants.result()
        try:
            results.write_json_atomic(out_dir / "metrics.json", record)
        except OSError as e:
            unwritable = unwritable or f"{out_dir / 'metrics.json'} cannot be written ({e.strerror or e})"
            out_dir = _write_record_elsewhere(record, steps, unwritable)
    if unwritable:
        raise RecordNotWritten(f"{unwritable}; the run's record is in {out_dir} instead (metrics.json, "
                               f"steps.jsonl): the run {record['status']} after "
                               f"{record['run']['steps_completed']} step(s)", record, out_dir)
    return record, EXIT_OK if status == "completed" else EXIT_CRASHED


def _heldout_result(trainer) -> dict | None:
    from . import heldout

    return heldout.result_of(trainer)


def _how_it_ended(e: BaseException) -> tuple[str, dict]:
    """The run's status and error for the exception that ended it (called inside its handler)."""
    import torch

    from .collect.collector import CanaryTimeout

    if isinstance(e, CanaryTimeout):
        return "timeout", {"type": "Timeout", "message": str(e)}
    if isinstance(e, (Interrupted, KeyboardInterrupt)):
        return "interrupted", {"type": type(e).__name__, "message": str(e) or "interrupted"}
    if isinstance(e, torch.OutOfMemoryError):
        return "crashed", {"type": "OutOfMemoryError", "message": str(e).splitlines()[0],
                           "traceback": traceback.format_exc()}
    return "crashed", {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}


def _finish(cfg, collector, status, error, config_path, env, started_at, t0, train_t0) -> tuple[dict, list]:
    """The run's record and its steps, from what the collector holds (also when its stream could not
    be written)."""
    from .results import to_series

    try:
        records = collector.close() if collector is not None else []
    except OSError:  # steps.jsonl could not be flushed (a full disk): the steps are still in memory
        records = collector.records
    ended = time.perf_counter()
    if error is not None:
        error.setdefault("traceback", None)
        error["step"] = records[-1]["step"] if records else None

    series = to_series(records)
    phases = sorted(k for k in series if k.endswith("_time_s") and k != "step_time_s")
    record = {
        "schema_version": results.SCHEMA_VERSION,
        "status": status,
        "error": error,
        "run": {
            "id": f"{cfg.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
            "config_name": cfg.name,
            "config_path": config_path,
            "training_type": cfg.training_type,
            "tier": cfg.tier,
            "started_at": started_at,
            "ended_at": _now(),
            "duration_s": ended - t0,
            "setup_s": (train_t0 - t0) if train_t0 else None,
            "train_s": (ended - train_t0) if train_t0 else None,
            "git_sha": git_sha(),
            "steps_planned": cfg.train.max_steps,
            "steps_completed": len(records),
            "warmup_steps": cfg.train.warmup_steps,
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        },
        "env": env,
        "config": cfg.resolved(),
        "config_hash": cfg.hash(),
        "summary": results.summarize(series, phases),
        "series": series,
    }
    return record, records
