"""`canary exec`: a user's own training script as a canary, unmodified.

    canary exec [-o DIR] [--max-steps N] [--name NAME] [--timeout S] -- python train.py ARGS...

The parent (`launch`) runs the command as given (an argv list, never a shell) with `hook/` first on
PYTHONPATH. Python imports `hook/sitecustomize.py` at start-up in every process of the command (the
script, torchrun's or accelerate's workers); it installs a post-import hook (`attach`) that wraps the
`__init__` of `transformers.Trainer` and of every subclass, so each Trainer the script builds gets a
StepCollector, and `args.max_steps` is capped when asked. Each process streams its steps to disk:

    DIR/steps.jsonl, DIR/trainer.json                          one process (WORLD_SIZE unset or 1)
    DIR/ranks/rank<N>/steps.jsonl, .../trainer.json            one directory per rank (WORLD_SIZE > 1)

`trainer.json` says what was attached (trainer class, training type, the TrainingArguments, the
environment the script really ran in). A second Trainer in the same process streams to
`steps.trainer2.jsonl` / `trainer.trainer2.json`, and so on; the record is built from the first
Trainer that trained. After the command ends, for any reason, the parent (`record`) writes
`DIR/metrics.json` in the schema of `canary run` (per rank `ranks/rank<N>/metrics.json` too, merged
as `canary run` merges them).

Only the standard library is imported at start-up: `hook` and `attach` must cost every Python
process of the command nothing until it imports `transformers.trainer`.
"""
