"""`cinegraph_oban.testing` for asyncio: `assert_enqueued`, `refute_enqueued` and `all_enqueued`
on a psycopg `AsyncConnection` or a SQLAlchemy `AsyncConnection` / `AsyncSession` (their source
is `cinegraph_oban/testing/assertions_async.py`)."""

from __future__ import annotations

from cinegraph_oban.testing.assertions_async import ENQUEUED_STATES, all_enqueued, assert_enqueued, refute_enqueued

__all__ = ["ENQUEUED_STATES", "all_enqueued", "assert_enqueued", "refute_enqueued"]
