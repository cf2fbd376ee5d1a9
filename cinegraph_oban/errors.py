"""Every error cinegraph-oban raises on purpose, drawn as one tree.

    CinegraphObanError                  base of everything below
    ├── ValidationError                 a job or record is invalid; `.problems` names each field
    ├── UnsupportedSchemaError          the database's Oban schema is missing, too old, or lacks
    │                                   what the job needs (a state, a priority range)
    ├── JobNotFoundError                no job with the given id under the prefix
    ├── VerificationError               a migration check found a difference; nothing was dropped
    ├── LockNotAcquiredError            another migrator holds the lock, a lock timed out, a
    │                                   deadlock or serialization failure (safe to retry)
    ├── MigrationInterruptedError       a migration run stopped by `interrupt()` from another
    │                                   thread; what it had committed stands (run it again)
    ├── DatabaseUnavailableError        no connection could be made, or no server could be
    │                                   started, or the connection was lost mid-operation
    ├── DatabaseUrlError                a database URL nobody can read (also a ValueError)
    ├── ConnectionArgumentError         the wrong kind of connection for the call: an asyncio
    │                                   connection given to a sync function or the reverse, or
    │                                   none at all (also a TypeError)
    ├── IsolationLevelError             a unique insert asked to join a REPEATABLE READ or
    │                                   SERIALIZABLE transaction, where it could duplicate
    ├── SessionRequiredError            a URL that reaches PostgreSQL through a transaction
    │                                   pooler (PgBouncer's pool_mode = transaction) given to
    │                                   what needs a server session of its own (the migration)
    └── DatabaseError                   any other error the server reported; `.sqlstate` says which

psycopg errors that reach the library's public calls are translated into this tree
(`translate_errors`), the original kept as `__cause__`.

Each message says what was wrong, where, and what to do about it. The command line prints the
message of any of these as one line and exits non-zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import errors as pg_errors

__all__ = [
    "CinegraphObanError",
    "ConnectionArgumentError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DatabaseUrlError",
    "IsolationLevelError",
    "JobNotFoundError",
    "LockNotAcquiredError",
    "MigrationInterruptedError",
    "Problem",
    "SessionRequiredError",
    "UnsupportedSchemaError",
    "ValidationError",
    "VerificationError",
    "translate_errors",
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


class MigrationInterruptedError(CinegraphObanError):
    """A migration run was stopped by `interrupt()` (as Ctrl-C stops the command line's)."""


class DatabaseUnavailableError(CinegraphObanError):
    """The database could not be reached, or a throwaway server could not be started."""


class DatabaseUrlError(CinegraphObanError, ValueError):
    """A database URL that is neither a PostgreSQL URL nor a libpq key=value string."""


class ConnectionArgumentError(CinegraphObanError, TypeError):
    """A call got the wrong kind of connection (asyncio for sync, or the reverse), or none."""


class IsolationLevelError(CinegraphObanError):
    """A unique insert was asked to join a transaction whose snapshot may predate its lock."""


class SessionRequiredError(CinegraphObanError):
    """The database URL goes through a transaction pooler, where each transaction may run on
    another server session: what needs one session throughout (a session's advisory lock, its
    settings) cannot run through it."""


class DatabaseError(CinegraphObanError):
    """The server refused a statement for a reason none of the errors above names."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


#: SQLSTATE classes of a lost or refused connection: 08 (connection exception), 57P01..57P03
#: (admin shutdown, crash shutdown, cannot connect now).
_UNAVAILABLE_STATES = ("57P01", "57P02", "57P03")
_SCHEMA_ERRORS = (
    pg_errors.UndefinedTable,
    pg_errors.UndefinedColumn,
    pg_errors.UndefinedFunction,
    pg_errors.UndefinedObject,
    pg_errors.InvalidSchemaName,
)
_LOCK_ERRORS = (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


def translated(exc: psycopg.Error) -> CinegraphObanError:
    """The library's error for a psycopg error: one line saying what happened and what to do."""
    state = exc.sqlstate
    reason = first_line(exc)
    if isinstance(exc, psycopg.InterfaceError) or (
        isinstance(exc, psycopg.OperationalError)
        and (state is None or state.startswith("08") or state in _UNAVAILABLE_STATES)
    ):
        return DatabaseUnavailableError(
            f"the database connection failed mid-operation: {reason}; nothing was acknowledged "
            "for the failed call: check that PostgreSQL is up and retry it"
        )
    if isinstance(exc, _LOCK_ERRORS):
        return LockNotAcquiredError(f"{reason} (SQLSTATE {state}); the statement was rolled back: retry it")
    if isinstance(exc, _SCHEMA_ERRORS):
        return UnsupportedSchemaError(
            f"{reason} (SQLSTATE {state}); is Oban installed under this prefix? "
            "`cinegraph-oban install` or Oban's own migrations create it"
        )
    if isinstance(exc, (psycopg.IntegrityError, psycopg.DataError)):
        return ValidationError("row", [Problem(exc.diag.column_name or exc.diag.constraint_name or "row", reason)])
    if isinstance(exc, pg_errors.InvalidSqlStatementName):
        return DatabaseError(
            f"the database refused the statement: {reason} (SQLSTATE {state}); where a transaction "
            "pooler sits in between (PgBouncer's pool_mode = transaction), a statement prepared on one "
            "server session is missing on the next: connect with prepare_threshold=None",
            state,
        )
    return DatabaseError(f"the database refused the statement: {reason} (SQLSTATE {state})", state)


@contextmanager
def translate_errors() -> Iterator[None]:
    """Raise psycopg errors from the block as the library's (see `translated`), keeping the
    psycopg error as `__cause__`. Usable around `await` as well: it only looks at what is raised."""
    try:
        yield
    except psycopg.Error as exc:
        raise translated(exc) from exc
