"""The connections a caller may hand us, reduced to the psycopg connection underneath.

`conn=` takes a psycopg 3 `Connection`, a SQLAlchemy `Connection` or an ORM `Session` on a
`postgresql+psycopg://` engine. Work done through it joins the caller's transaction: nothing is
committed here, and the caller's own commit or rollback decides for our rows too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq

from cinegraph_oban.errors import CinegraphObanError
from cinegraph_oban.templates import render

__all__ = ["atomic", "to_psycopg"]


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
