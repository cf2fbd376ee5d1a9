"""Where `AsyncOban` used to live: its source is now `cinegraph_oban/asyncio/client.py`, the one
source of both faces of the client. Kept so that `from cinegraph_oban.async_client import
AsyncOban` still works; import it from `cinegraph_oban` or `cinegraph_oban.asyncio`."""

from __future__ import annotations

from cinegraph_oban.asyncio.client import AsyncOban

__all__ = ["AsyncOban"]
