"""This directory goes first on the command's PYTHONPATH (see `canary_runner.exec`); it is a package
only so that it ships with canary_runner. Its `sitecustomize` is what Python imports at start-up."""
