"""Typed errors. Each says what went wrong, where, and how to fix it.

The CLI turns any `SpecializeError` into one line and a non-zero exit code; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class SpecializeError(Exception):
    """A user-facing error: what happened, where (file:line, field, name), and the fix."""

    exit_code = 1

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.fix:
            text = f"{text} -- {self.fix}"
        return text


class ConfigError(SpecializeError):
    """A config file or override is invalid; carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[str], *, source: str | None = None):
        self.problems = problems
        head = f"{len(problems)} problem(s) in {source or 'config'}"
        super().__init__(head + ":\n  " + "\n  ".join(problems))

    def one_line(self) -> str:  # several lines by nature: one per problem
        return self.what


class UserFileError(SpecializeError):
    """A file the user named is missing, unreadable or malformed."""


class ModelError(SpecializeError):
    """A model reference cannot be resolved or a model file is unusable."""


class ChecksumError(ModelError):
    """A downloaded or cached file does not have the expected sha256."""


class DataError(SpecializeError):
    """The data cannot be used as given (wrong kind, mixed kinds, nothing left after checks)."""


class TrainingError(SpecializeError):
    """Training cannot start or had to stop (bad state, NaN loss, budget exceeded)."""


class NotFoundError(SpecializeError):
    """A named run, adapter or artifact is not in the registry or on disk."""
