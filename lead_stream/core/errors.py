"""Exceptions the library raises for bad input; only `lead_stream.cli` turns them into exit codes."""

from __future__ import annotations

from pathlib import Path


class LeadStreamError(Exception):
    """Base class for every user-facing error of lead-stream (bad input, bad config)."""


class LeadFormatError(LeadStreamError, ValueError):
    """A file does not match LEAD's format (or ours): names the file and what is wrong.

    Args:
        path: the offending file or directory (a URL stays a string).
        problem: what was expected and what was found.
    """

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path: Path | str = path if isinstance(path, str) and "://" in path else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(LeadStreamError, ValueError):
    """A config key or value given by the user is invalid (unknown key, unparsable value)."""
