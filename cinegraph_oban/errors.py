"""Every error cinegraph-oban raises on purpose, drawn as one tree.

    CinegraphObanError                  base of everything below
    ├── ValidationError                 a job or record is invalid; `.problems` names each field
    ├── UnsupportedSchemaError          the database's Oban schema is missing, too old, or lacks
    │                                   what the job needs (a state, a priority range)
    ├── JobNotFoundError                no job with the given id under the prefix
    ├── VerificationError               a migration check found a difference; nothing was dropped
    ├── LockNotAcquiredError            another migrator holds the lock, or a lock timed out
    └── DatabaseUnavailableError        no connection could be made, or no server could be started

Each message says what was wrong, where, and what to do about it. The command line prints the
message of any of these as one line and exits non-zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "CinegraphObanError",
    "DatabaseUnavailableError",
    "DatabaseUrlError",
    "JobNotFoundError",
    "LockNotAcquiredError",
    "Problem",
    "UnsupportedSchemaError",
    "ValidationError",
    "VerificationError",
]


def first_line(exc: BaseException, fallback: str | None = None) -> str:
    """The first line of an exception's message (drivers add detail lines), for one-line errors;
    `fallback`, or the exception's type name, when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else fallback or type(exc).__name__


class CinegraphObanError(Exception):
    """Base class of every error raised on purpose by cinegraph-oban."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One invalid field: which field, and what is wrong with it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ValidationError(CinegraphObanError, ValueError):
    """A job or record failed validation. All problems are reported at once."""

    def __init__(self, subject: str, problems: Iterable[Problem]) -> None:
        self.subject = subject
        self.problems = tuple(problems)
        listed = "; ".join(str(p) for p in self.problems)
        super().__init__(f"invalid {subject}: {listed}")


class UnsupportedSchemaError(CinegraphObanError):
    """The Oban schema in the database cannot take this job, or is not there at all."""


class JobNotFoundError(CinegraphObanError, LookupError):
    """No job with the given id exists under the prefix."""


class VerificationError(CinegraphObanError):
    """A verification found differences; the operation stopped before changing anything more."""


class LockNotAcquiredError(CinegraphObanError):
    """A lock the operation needs is held by someone else."""


class DatabaseUnavailableError(CinegraphObanError):
    """The database could not be reached, or a throwaway server could not be started."""


class DatabaseUrlError(CinegraphObanError, ValueError):
    """A database URL that is neither a PostgreSQL URL nor a libpq key=value string."""
