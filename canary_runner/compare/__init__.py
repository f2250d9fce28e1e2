"""compare: a current canary run (or repeats) against a baseline -> comparison.json.

Plain data in, plain data out: this package reads metrics.json records and never imports TRL,
transformers or torch (`calibrate`, which trains, imports the runner lazily). Kept import-light:
the CLI imports `compare.cli` and `compare.calibrate` to build its parser.

Modules: `loading` (runs from paths), `settings` (per-tier thresholds + overrides), `stats`
(bootstrap intervals, trends), `checks_*` (one module per category), `diagnosis`, `engine`
(the comparison document), `cli` and `calibrate` (the commands).
"""
