"""Testing helpers for applications that enqueue Oban jobs, and the pytest plugin.

    from cinegraph_oban.testing import assert_enqueued, refute_enqueued, all_enqueued

The helpers (Oban.Testing's, on a psycopg or SQLAlchemy connection) are `assertions`, generated
from their asyncio source `assertions_async` (`cinegraph_oban.asyncio.testing`); the pytest
plugin (`pytest_plugin`) gives fresh Oban databases. The helpers build their queries with
SQLAlchemy, so they are loaded on first use: the plugin, which pytest loads at every start,
does not import SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cinegraph_oban.testing.assertions import ENQUEUED_STATES, all_enqueued, assert_enqueued, refute_enqueued

_ASSERTIONS = frozenset({"ENQUEUED_STATES", "all_enqueued", "assert_enqueued", "refute_enqueued"})


def __getattr__(name: str) -> Any:
    if name not in _ASSERTIONS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from cinegraph_oban.testing import assertions

    value = getattr(assertions, name)
    globals()[name] = value
    return value


__all__ = ["ENQUEUED_STATES", "all_enqueued", "assert_enqueued", "refute_enqueued"]
