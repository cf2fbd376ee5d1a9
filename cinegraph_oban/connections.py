"""The connections a caller may hand us, reduced to the psycopg connection underneath.

`conn=` takes a psycopg 3 `Connection`, a SQLAlchemy `Connection` or an ORM `Session` on a
`postgresql+psycopg://` engine. Work done through it joins the caller's transaction: nothing is
committed here, and the caller's own commit or rollback decides for our rows too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg import pq

from cinegraph_oban.errors import CinegraphObanError
from cinegraph_oban.templates import render

__all__ = ["async_atomic", "atomic", "redact_dsn", "to_async_psycopg", "to_psycopg"]


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for error messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the given database URL"
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in info.items()) or "the default database"


def to_psycopg(conn: Any) -> psycopg.Connection[Any]:
    """The psycopg connection behind `conn`, with a SQLAlchemy transaction begun if needed."""
    if isinstance(conn, psycopg.Connection):
        return conn
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
    raise CinegraphObanError(
        f"conn= takes a psycopg.Connection, a SQLAlchemy Connection or Session; got {type(conn).__name__}"
    )


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
        conn.execute(render("jobs/open_transaction.sql.j2").encode())
    with conn.transaction():
        yield


async def to_async_psycopg(conn: Any) -> psycopg.AsyncConnection[Any]:
    """The psycopg AsyncConnection behind `conn` (SQLAlchemy AsyncConnection or AsyncSession too)."""
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
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
    raise CinegraphObanError(
        "conn= takes a psycopg.AsyncConnection, a SQLAlchemy AsyncConnection or AsyncSession; "
        f"got {type(conn).__name__}"
    )


@asynccontextmanager
async def async_atomic(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """`atomic` for async connections: a transaction of its own, or a savepoint in the caller's."""
    if not conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
        await conn.execute(render("jobs/open_transaction.sql.j2").encode())
    async with conn.transaction():
        yield
