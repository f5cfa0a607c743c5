"""Error types that name the operation and what was wrong with the input (redis-py's habit)."""

from typing import Any


class SQDError(Exception):
    """Base class: every error SQD raises on purpose."""


class BusError(SQDError):
    """A bus operation failed or was given something it cannot send."""


class DecodeError(BusError):
    """A message on a stream is not a valid event; the message says which field and why."""


class ArtifactError(SQDError):
    """An artifact is missing, unreadable, or does not match its recorded sha256."""


class ConfigError(SQDError):
    """A preset, override or setting is invalid; the message names the key and the allowed values.

    `errors` lists each problem as {"loc": [...], "msg": str} (the shape of a 422 body)."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.errors: list[dict[str, Any]] = errors if errors is not None else [{"loc": [], "msg": message}]


class ModelFileMissing(SQDError):
    """A model or dataset file that cannot be downloaded here is absent; says which, where and how to provide it."""
