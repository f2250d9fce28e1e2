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


MAX_MESSAGE = 300  # a message quotes the offending value: a hostile document's can be megabytes


def _where(error) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return where if len(where) <= MAX_MESSAGE else where[:MAX_MESSAGE] + "..."


def _message(error) -> str:
    text = error.message
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def first_error(name: str, document) -> str | None:
    """The most relevant violation of an *encoded* document as 'path: message', or None when valid."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(document))
    return None if error is None else f"{_where(error)}: {_message(error)}"


def all_errors(name: str, document) -> list[str]:
    """Every violation as 'path: message' (empty when valid)."""
    return [f"{_where(e)}: {_message(e)}" for e in _validator(name).iter_errors(document)]
