"""The connections a caller may hand us, reduced to the psycopg connection underneath.

`conn=` takes a psycopg 3 `Connection`, a SQLAlchemy `Connection` or an ORM `Session` on a
`postgresql+psycopg://` engine. Work done through it joins the caller's transaction: nothing is
committed here, and the caller's own commit or rollback decides for our rows too.

A database URL may come in the forms other tools write (`normalize_dsn`): Ecto's `ecto://`,
SQLAlchemy's `postgresql+psycopg://` and `postgresql+psycopg2://`, Heroku's `postgres://`; each
becomes the `postgresql://` URL libpq reads.
"""

from __future__ import annotations

import asyncio
import re
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode

import psycopg
from psycopg import pq

from cinegraph_oban.errors import (
    CinegraphObanError,
    ConnectionArgumentError,
    DatabaseUnavailableError,
    DatabaseUrlError,
    first_line,
)
from cinegraph_oban.sql import builder

__all__ = [
    "ACCEPTED_DSN_FORMS",
    "DatabaseUrlError",
    "async_atomic",
    "async_connection_lock",
    "atomic",
    "connect",
    "connection_lock",
    "normalize_dsn",
    "redact_dsn",
    "through_transaction_pooler",
    "to_async_psycopg",
    "to_psycopg",
]

#: What a database URL may look like, for error messages.
ACCEPTED_DSN_FORMS = (
    "postgresql://user@host:port/db (also postgres://, ecto://, postgresql+psycopg://, postgresql+psycopg2://) "
    "or libpq key=value (host=... port=... dbname=... user=...)"
)

#: URL schemes that mean PostgreSQL: libpq's own two, Ecto's, and SQLAlchemy's `<dialect>+<driver>`.
_POSTGRES_SCHEME = re.compile(r"^(?:postgres(?:ql)?(?:\+[a-z0-9_]+)?|ecto)$", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)\S*(?=@)", re.IGNORECASE)
_KEY_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def _mask_passwords(text: str) -> str:
    """`text` with every password of a URL or key=value string in it replaced by `***`."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + "***", text)
    return _KEY_PASSWORD.sub(lambda m: m.group("head") + "***", text)


def normalize_dsn(dsn: str) -> str:
    """The libpq form of a database URL written for Ecto, SQLAlchemy or Heroku.

    `ecto://`, `postgres://` and `postgresql+<driver>://` become `postgresql://` (Ecto's
    `?ssl=true` becomes `sslmode=require`); a libpq key=value string is kept. Raises
    DatabaseUrlError, without the password in its message, for anything libpq cannot read.
    """
    text = dsn.strip()
    scheme, sep, rest = text.partition("://")
    if sep and _POSTGRES_SCHEME.match(scheme):
        if scheme.lower() == "ecto":
            rest = _ecto_query(rest)
        text = "postgresql://" + rest
    try:
        psycopg.conninfo.conninfo_to_dict(text)
    except psycopg.ProgrammingError as exc:
        reason = first_line(exc, "unreadable")
        if reason.startswith('missing "="'):
            reason = f"unknown URL scheme {scheme!r}" if sep else "not a URL and not key=value pairs"
        raise DatabaseUrlError(
            f"cannot read the database URL {_mask_passwords(dsn.strip())!r}: {_mask_passwords(reason)}; "
            f"accepted: {ACCEPTED_DSN_FORMS}"
        ) from None
    return text


def _ecto_query(rest: str) -> str:
    """Ecto's `ssl=true|false` query parameter as libpq's `sslmode`."""
    base, sep, query = rest.partition("?")
    if not sep:
        return rest
    pairs = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "ssl":
            if value.lower() in ("true", "1"):
                pairs.append(("sslmode", "require"))
            continue
        pairs.append((key, value))
    return f"{base}?{urlencode(pairs)}" if pairs else base


#: How many times a URL through a proxy is looked at for sessions shared or changed.
POOLER_PROBES = 3


def through_transaction_pooler(conn: psycopg.Connection[Any], dsn: str, **kwargs: Any) -> bool:
    """Whether `conn`, an autocommit connection made from `dsn`, reaches PostgreSQL through a
    pooler that runs each transaction (or statement) on whichever server session is free, as
    PgBouncer's pool_mode = transaction does: session state (a session's advisory lock, SET, a
    prepared statement) then does not stay with the client. `kwargs` go to the connection made
    for the probe (its application_name).

    A direct connection is known at once, and for sure: the server's own process id is the one
    the server sent as the connection started, which a pooler makes up for its clients. Through
    a proxy, a server session is looked for shared or changed, a few times: another connection
    from `dsn`, its transaction open, is given the session `conn`'s last statement ran on (a
    pooler hands out the session it got back last, PgBouncer's default), or `conn`'s next
    statement runs on another session; a pooler that refuses a transaction (statement mode)
    counts too. A pooler in session mode keeps one server session per client, so neither can
    happen there. Each probe's connection is closed before the next. Nothing is prepared (psycopg
    would prepare a statement run often enough, which through such a pooler is not found again)."""
    pid = builder.sql("session/backend_pid")
    last = conn.execute(pid, {}, prepare=False).fetchone()
    if last is not None and last[0] == conn.info.backend_pid:
        return False
    for _ in range(POOLER_PROBES):
        with connect(dsn, **kwargs) as other:  # not autocommit: its statement opens a transaction
            try:
                held = other.execute(pid, {}, prepare=False).fetchone()
            except psycopg.errors.ProtocolViolation:  # "transaction blocks not allowed in statement pooling mode"
                return True
            if held == last:
                return True
            now = conn.execute(pid, {}, prepare=False).fetchone()
            if now != last:
                return True
    return False


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """`psycopg.connect` on the normalized URL; a failure to connect is one line without the password."""
    url = normalize_dsn(dsn)
    try:
        return psycopg.connect(url, **kwargs)
    except psycopg.OperationalError as exc:
        raise cannot_connect(url, exc) from exc


async def async_connect(dsn: str, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
    """The same as `connect`, for asyncio."""
    url = normalize_dsn(dsn)
    try:
        return await psycopg.AsyncConnection.connect(url, **kwargs)
    except psycopg.OperationalError as exc:
        raise cannot_connect(url, exc) from exc


def cannot_connect(url: str, exc: Exception) -> DatabaseUnavailableError:
    """The one-line error for a failed connection, without the password."""
    return DatabaseUnavailableError(
        f"cannot connect to {redact_dsn(url)}: {_mask_passwords(first_line(exc))}; "
        "check the URL, that PostgreSQL is running, and the credentials"
    )


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for error messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the given database URL"
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in info.items()) or "the default database"


def to_psycopg(conn: Any) -> psycopg.Connection[Any]:
    """The psycopg connection behind `conn`, with a SQLAlchemy transaction begun if needed.

    Raises ConnectionArgumentError at once for an asyncio connection (psycopg's, or SQLAlchemy's
    AsyncConnection/AsyncSession): a sync call cannot use it, and must not pretend to.
    """
    if isinstance(conn, psycopg.Connection):
        return conn
    if _is_async(conn):
        raise ConnectionArgumentError(
            f"this is a sync function, but it was given an asyncio connection ({type(conn).__name__}); "
            "use the async form (AsyncOban, or `await` the async_* function) or pass a sync connection"
        )
    try:
        from sqlalchemy.engine import Connection as SAConnection
        from sqlalchemy.orm import Session
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        SAConnection = Session = None  # type: ignore[assignment,misc]
    if Session is not None and isinstance(conn, Session):
        conn = conn.connection()
    if SAConnection is not None and isinstance(conn, SAConnection):
        if not conn.in_transaction():
            # Begin explicitly so that the caller's conn.commit() commits what we write.
            conn.begin()
        dbapi = conn.connection.dbapi_connection
        if isinstance(dbapi, psycopg.Connection):
            return dbapi
        raise CinegraphObanError(
            f"conn= needs psycopg 3 underneath, but this SQLAlchemy engine uses "
            f"{type(dbapi).__module__}; create the engine with a postgresql+psycopg:// URL"
        )
    raise ConnectionArgumentError(
        f"conn= takes a psycopg.Connection, a SQLAlchemy Connection or Session; got {type(conn).__name__}"
    )


def _is_async(conn: Any) -> bool:
    """True for psycopg's AsyncConnection and SQLAlchemy's asyncio connection and session."""
    if isinstance(conn, psycopg.AsyncConnection):
        return True
    try:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return False
    return isinstance(conn, (AsyncConnection, AsyncSession))


def _is_sync(conn: Any) -> bool:
    """True for psycopg's Connection and SQLAlchemy's sync Connection and Session."""
    if isinstance(conn, psycopg.Connection):
        return True
    from sqlalchemy.engine import Connection as SAConnection
    from sqlalchemy.orm import Session

    return isinstance(conn, (SAConnection, Session))


@contextmanager
def atomic(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """All or nothing for several statements, without ever committing a caller's transaction.

    On an autocommit connection this is a transaction of its own. On a connection inside a
    transaction it is a savepoint: a failure rolls back our statements only, and the caller's
    transaction stays usable.
    """
    if not conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
        # psycopg would wrap an idle non-autocommit connection in BEGIN ... COMMIT; open the
        # caller's transaction first so that ours becomes a savepoint inside it.
        conn.execute(builder.sql("session/open_transaction"), {})
    with conn.transaction():
        yield


async def to_async_psycopg(conn: Any) -> psycopg.AsyncConnection[Any]:
    """The psycopg AsyncConnection behind `conn` (SQLAlchemy AsyncConnection or AsyncSession too)."""
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    if not _is_async(conn) and _is_sync(conn):
        raise ConnectionArgumentError(
            f"this is an asyncio function, but it was given a sync connection ({type(conn).__name__}); "
            "use the sync form (Oban) or pass a psycopg.AsyncConnection, SQLAlchemy AsyncConnection or AsyncSession"
        )
    try:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        AsyncConnection = AsyncSession = None  # type: ignore[assignment,misc]
    if AsyncSession is not None and isinstance(conn, AsyncSession):
        conn = await conn.connection()
    if AsyncConnection is not None and isinstance(conn, AsyncConnection):
        if not conn.in_transaction():
            await conn.begin()
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        if isinstance(driver, psycopg.AsyncConnection):
            return driver
        raise CinegraphObanError(
            f"conn= needs psycopg 3 underneath, but this SQLAlchemy engine uses {type(driver).__module__}; "
            "create the engine with a postgresql+psycopg:// URL"
        )
    raise ConnectionArgumentError(
        "conn= takes a psycopg.AsyncConnection, a SQLAlchemy AsyncConnection or AsyncSession; "
        f"got {type(conn).__name__}"
    )


@asynccontextmanager
async def async_atomic(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """`atomic` for async connections: a transaction of its own, or a savepoint in the caller's."""
    if not conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
        await conn.execute(builder.sql("session/open_transaction"), {})
    async with conn.transaction():
        yield


# One lock per connection, shared by every client and call that uses it, held for the whole of
# each operation (statement, savepoint, pipeline). psycopg's own lock guards one command at a
# time; an insert of ours is several (a savepoint and its release, a pipeline, a COPY with its
# reserved ids), and two of them interleaved on one connection nest each other's transactions:
# rows acknowledged, then rolled back with the other's (issue 15).
_LOCKS: weakref.WeakKeyDictionary[psycopg.Connection[Any], threading.RLock] = weakref.WeakKeyDictionary()
_ASYNC_LOCKS: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], asyncio.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def connection_lock(conn: psycopg.Connection[Any]) -> threading.RLock:
    """The lock our operations on `conn` hold for their whole duration (re-entrant)."""
    lock = _LOCKS.get(conn)
    if lock is None:
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(conn, threading.RLock())
    return lock


def async_connection_lock(conn: psycopg.AsyncConnection[Any]) -> asyncio.Lock:
    """The same for an asyncio connection: one task's operation at a time (not re-entrant)."""
    lock = _ASYNC_LOCKS.get(conn)
    if lock is None:
        with _LOCKS_GUARD:
            lock = _ASYNC_LOCKS.setdefault(conn, asyncio.Lock())
    return lock
