"""`canary equivalence`: run a config's equivalence classes alone (no canary run, no baseline)."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Run the equivalence classes of CONFIG: variants of the canary that must train identically (same seed,
fp32, deterministic) and whose loss and grad-norm curves must agree at every step. `canary run` runs
the config's `equivalence:` list after the canary; this command runs them alone, or the classes named
with --class (`all`: every shipped class that applies).

Shipped classes: grad_accumulation, data_parallel, attention, padding, resume, lora_merge.

  canary equivalence dpo_embedded --class all
  canary equivalence canary/sft.yaml --class grad_accumulation --class resume -o runs/eq

Writes OUT/equivalence.json. Exit codes: 0 every class agrees (or does not apply); 1 a class parts;
2 bad input; 3 a variant's run crashed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("config", help="a config file, or the name of a shipped config (see `canary configs`)")
    parser.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME",
                        help="a shipped class to run instead of the config's list (repeatable; `all` for every one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("-o", "--output", default="runs/equivalence", metavar="DIR",
                        help="where the variants' runs and equivalence.json go (default: runs/equivalence)")


def main(args) -> int:
    from . import results
    from .cli import fail, resolve_config_path
    from .config import SHIPPED_EQUIVALENCE, ConfigError, load_config
    from .plugins import use_workspace, workspace_of
    from .quiet import quiet_libraries

    names = list(SHIPPED_EQUIVALENCE) if "all" in args.classes else args.classes
    unknown = [n for n in names if n not in SHIPPED_EQUIVALENCE]
    if unknown:
        return fail(f"--class {unknown[0]}: not a shipped class ({', '.join(SHIPPED_EQUIVALENCE)}, or all)")
    path = resolve_config_path(args.config)
    sets = list(args.set) + ([f"equivalence=[{', '.join(names)}]"] if names else [])
    try:
        cfg = load_config(path, sets)
    except ConfigError as e:
        return fail(str(e))
    if not cfg.equivalence:
        return fail(f"{path}: no equivalence classes: list them in the config (`equivalence: [grad_accumulation, "
                    "resume]`) or pass --class NAME")
    use_workspace(workspace_of(path))
    quiet_libraries()
    from . import equivalence

    out = Path(args.output)
    found = equivalence.run_all(cfg, out)
    results.write_json_atomic(out / "equivalence.json", found)
    width = max(len(r["name"]) for r in found)
    for r in found:
        print(f"  {r['name']:<{width}}  {r['status']:<5}  {r['summary']}")
    print(f"wrote {out / 'equivalence.json'}")
    if any(r["status"] == "fail" for r in found):
        return 1
    return 3 if any(r["status"] == "error" for r in found) else 0
