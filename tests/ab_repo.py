"""A real two-commit git repository for A/B tests, made from the example user repository.

base commit: the example as shipped, its DPO canary shortened to 10 steps (2 of warmup, so each run's
median step time has 8 steps); head commit: the team's DPO trainer subclass does extra forward passes
every step (diagnostics), and the package's version goes from 0.1.0 to 0.2.0. With `same=True` (an A/A)
the head commit edits only a line of the README: the code that runs is the base's.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "user-repo"
# Forty extra forward passes a step (one per probe) make the head about 20 times slower than the base.
# The first look, at the minimum of 3 pairs, sees a t interval with 2 degrees of freedom, and on a shared
# 2-core machine one base run (a fraction of a second) slowed by a neighbour moves a pair's log ratio by
# 0.2-0.3: a change this clear still fails there in about 98 of 100 runs (by simulation of that noise),
# where 12 probes (about 8 times slower) left 1 in 4 or 5 undecided until the fourth pair. More steps a
# run did not help (a 32-step median swung as much as an 8-step one); only the size of the change does.
PROBES = 40
EXTRA_FORWARD = ("        loss, outputs = super().compute_loss(",
                 "        with torch.no_grad():  # diagnostics: the same forward again, once per probe\n"
                 f"            for _probe in range({PROBES}):\n"
                 "                super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)\n"
                 "        loss, outputs = super().compute_loss(")


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-c", "user.name=dev", "-c", "user.email=dev@example.com", *args], cwd=repo,
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def make_repo(root: Path, same: bool = False, classes: tuple[str, ...] = ()) -> tuple[str, str]:
    """Build the repository at `root`; returns (base sha, head sha). `same`: the head changes only the README.
    `classes`: equivalence classes the canary lists (on both commits)."""
    shutil.copytree(EXAMPLE, root)
    config = root / "canary" / "dpo.yaml"
    text = config.read_text()
    for old, new in (("max_steps: 20", "max_steps: 10"), ("warmup_steps: 4", "warmup_steps: 2")):
        assert old in text, f"the example's canary/dpo.yaml changed: update {old!r}"
        text = text.replace(old, new)
    if classes:
        text += f"equivalence: [{', '.join(classes)}]\n"
    config.write_text(text)
    readme = root / "README.md"
    readme.write_text("# acme-rlhf\n\nOur RLHF trainers.\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "base")
    base = git(root, "rev-parse", "HEAD")
    if same:
        readme.write_text("# acme-rlhf\n\nOur RLHF trainers, with a canary.\n")
        git(root, "commit", "-q", "-am", "README: mention the canary")
        return base, git(root, "rev-parse", "HEAD")
    trainer = root / "acme_rlhf" / "trainers.py"
    old, new = EXTRA_FORWARD
    assert old in trainer.read_text(), "the example's trainers.py changed: update EXTRA_FORWARD"
    trainer.write_text("import torch\n" + trainer.read_text().replace(old, new))
    pyproject = root / "pyproject.toml"
    assert 'version = "0.1.0"' in pyproject.read_text()
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
    git(root, "commit", "-q", "-am", "diagnostics forward passes every step")
    return base, git(root, "rev-parse", "HEAD")
