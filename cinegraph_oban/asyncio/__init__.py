"""The asyncio face of cinegraph-oban: `cinegraph_oban.asyncio` mirrors `cinegraph_oban` as
`redis.asyncio` mirrors `redis`, taking psycopg `AsyncConnection` and SQLAlchemy
`AsyncConnection` / `AsyncSession` where the sync face takes their sync kinds.

Modules here are the source of their sync twins, which tools/async_to_sync.py generates (CI
checks they are current): `cinegraph_oban.asyncio.engine` -> `cinegraph_oban.engine`.
"""

from __future__ import annotations

from cinegraph_oban.async_client import AsyncOban
from cinegraph_oban.asyncio import engine

__all__ = ["AsyncOban", "engine"]
