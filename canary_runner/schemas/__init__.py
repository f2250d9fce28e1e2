"""The JSON Schemas of the public formats (metrics.json, comparison.json) and validation against them."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources


@cache
def load(name: str) -> dict:
    """The schema `<name>.schema.json` shipped in this package."""
    return json.loads(resources.files(__name__).joinpath(f"{name}.schema.json").read_text())


def _validator(name: str):
    import jsonschema  # only when validating: it costs ~0.1 s to import

    return jsonschema.Draft202012Validator(load(name))


def _where(error) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(top level)"


def first_error(name: str, document) -> str | None:
    """The most relevant violation of an *encoded* document as 'path: message', or None when valid."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(document))
    return None if error is None else f"{_where(error)}: {error.message}"


def all_errors(name: str, document) -> list[str]:
    """Every violation as 'path: message' (empty when valid)."""
    return [f"{_where(e)}: {e.message}" for e in _validator(name).iter_errors(document)]
