"""Terminal output of `canary run`: a progress bar while training, one screen of summary after."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# The RL metric worth a glance in the summary, per training type.
HEADLINE = {
    "sft": ["mean_token_accuracy", "entropy"],
    "dpo": ["rewards/accuracies", "rewards/margins"],
    "reward": ["accuracy", "margin"],
    "ppo": ["objective/kl", "objective/rlhf_reward", "policy/clipfrac_avg", "policy/entropy_avg"],
    "grpo": ["reward", "reward_std", "kl", "completions/mean_length"],
    "rloo": ["reward", "reward_std", "kl", "completions/mean_length"],
}


def _fmt(v, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}{unit}"
    return f"{v}{unit}"


class RunProgress:
    def __init__(self, cfg, enabled: bool = True):
        self.cfg = cfg
        # Progress on stderr so stdout stays clean for scripts; rich draws nothing when not a TTY.
        self.console = Console(stderr=True)
        self.out = Console(file=sys.stdout, soft_wrap=True)
        self.progress = None
        if enabled and self.console.is_terminal:
            self.progress = Progress(
                TextColumn(f"[bold]{escape(cfg.name)}[/]"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console, transient=True,
            )
            self.task = self.progress.add_task("train", total=cfg.train.max_steps, info="setting up")

    def __enter__(self):
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()

    def step(self, record: dict) -> None:
        if self.progress:
            info = f"loss {_fmt(record.get('loss'))}  {record['step_time_s'] * 1000:.0f} ms/step"
            self.progress.update(self.task, completed=record["step"], info=info)

    def print_summary(self, record: dict, out_dir: Path) -> None:
        s, run = record["summary"], record["run"]
        status = record["status"]
        colour = "green" if status == "completed" else "red"
        t = Table(title=f"{escape(run['config_name'])} ({run['training_type']}, {run['tier']}): [{colour}]{status}[/]",
                  show_header=False, title_justify="left")
        t.add_column(style="bold")
        t.add_column()
        st, tps = s["step_time_s"], s["tokens_per_s"]
        t.add_row("steps", f"{run['steps_completed']}/{run['steps_planned']} ({run['warmup_steps']} warmup)")
        t.add_row("step time", f"median {_fmt(st['median'], ' s')}, p95 {_fmt(st['p95'], ' s')}, MAD {_fmt(st['mad'], ' s')}")
        t.add_row("tokens/s", f"median {_fmt(tps['median'])}")
        for phase, stats in s.get("phases", {}).items():
            t.add_row(phase.removesuffix("_time_s"), f"median {_fmt(stats['median'], ' s')}")
        mem = s["peak_memory"]
        for dev in mem["devices"]:
            t.add_row(f"memory {dev['device']}", f"allocated {dev['max_allocated_mb']:.0f} MB, reserved {dev['max_reserved_mb']:.0f} MB")
        t.add_row("memory (RssAnon)", f"peak {_fmt(mem['cpu_rss_anon_mb'], ' MB')}")
        dist = s.get("distributed")
        if dist:
            t.add_row("ranks", f"{dist['world_size']} x {dist['strategy']}: median step max {_fmt(dist['step_time_median_max_s'], ' s')}, "
                      f"straggler ratio {_fmt(dist['straggler_ratio'])}, peak memory max {_fmt(dist['peak_memory_max_mb'], ' MB')}")
        t.add_row("loss", f"first {_fmt(s['loss']['first'])}, final {_fmt(s['loss']['final'])}, min {_fmt(s['loss']['min'])}")
        nan = s["nan_inf"]
        t.add_row("NaN/Inf", "none" if not nan["total"] else f"{nan['total']} (first at step {nan['first_step']} in {nan['first_metric']})")
        for key in HEADLINE.get(run["training_type"], []):
            if key in s["last"]:
                t.add_row(key, _fmt(s["last"][key]))
        t.add_row("time", f"setup {_fmt(run['setup_s'], ' s')}, train {_fmt(run['train_s'], ' s')}")
        if record.get("error"):
            err = record["error"]
            t.add_row("error", f"[red]{escape(err['type'])}: {escape(err['message'])}[/]")
        self.out.print(t)
        self.out.print(f"metrics: {out_dir / 'metrics.json'}")
