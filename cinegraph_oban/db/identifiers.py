"""Schema names (Oban's prefix) checked before anything is created or written.

A prefix names exactly that schema for any name PostgreSQL accepts: the templates quote it as
an identifier (`psycopg.sql.Identifier`), as Oban itself quotes any prefix. What PostgreSQL
would not keep as given is refused up front, with the library's error, instead of failing half
way or naming another schema:

- not a string, empty, or with a NUL character (no identifier can hold one);
- a lone surrogate (not UTF-8, so not sendable);
- more than 63 bytes in UTF-8: PostgreSQL silently truncates a longer name (NAMEDATALEN), so
  the schema written to would be another one;
- `pg_...`: reserved for system schemas, `CREATE SCHEMA` refuses it;
- for an Oban prefix, more than 52 bytes: the insert notification's channel is
  `<prefix>.oban_insert`, and PostgreSQL refuses a channel over 63 bytes on every insert.
"""

from __future__ import annotations

from cinegraph_oban.errors import Problem, ValidationError

__all__ = ["MAX_IDENTIFIER_BYTES", "MAX_PREFIX_BYTES", "check_identifier", "check_prefix"]

#: PostgreSQL's NAMEDATALEN - 1: a longer identifier is truncated without an error.
MAX_IDENTIFIER_BYTES = 63
#: The channel `<prefix>.oban_insert` must fit in MAX_IDENTIFIER_BYTES too.
_CHANNEL_SUFFIX = ".oban_insert"
MAX_PREFIX_BYTES = MAX_IDENTIFIER_BYTES - len(_CHANNEL_SUFFIX)


def _problem(name: object, field: str, channel: bool) -> str | None:
    if not isinstance(name, str):
        return f"expected a schema name as a string, got {name!r}"
    if not name:
        return "is empty; give a schema name such as 'public'"
    if "\x00" in name:
        return f"{name!r} contains a NUL character, which no PostgreSQL identifier can hold"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return f"{name!r} contains a lone surrogate, which is not valid UTF-8"
    if size > MAX_IDENTIFIER_BYTES:
        return (
            f"{name!r} is {size} bytes in UTF-8; PostgreSQL keeps at most {MAX_IDENTIFIER_BYTES} and would "
            "silently name another (truncated) schema: choose a shorter name"
        )
    if name.startswith("pg_"):
        return f"{name!r} starts with 'pg_', which PostgreSQL reserves for its system schemas: choose another name"
    if channel and size > MAX_PREFIX_BYTES:
        return (
            f"{name!r} is {size} bytes in UTF-8; Oban's insert notification channel {name + _CHANNEL_SUFFIX!r} "
            f"would exceed PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes and every insert would fail: "
            f"use at most {MAX_PREFIX_BYTES} bytes"
        )
    return None


def check_identifier(name: object, *, field: str = "schema") -> str:
    """`name` when PostgreSQL keeps it as given as a schema name; else a ValidationError."""
    problem = _problem(name, field, channel=False)
    if problem is not None:
        raise ValidationError(field, [Problem(field, problem)])
    assert isinstance(name, str)
    return name


def check_prefix(prefix: object, *, field: str = "prefix", channel: bool = True) -> str:
    """`prefix` when it can name an Oban installation (see the module's docstring); else a
    ValidationError naming the field, before anything is created."""
    problem = _problem(prefix, field, channel=channel)
    if problem is not None:
        raise ValidationError(field, [Problem(field, problem)])
    assert isinstance(prefix, str)
    return prefix
