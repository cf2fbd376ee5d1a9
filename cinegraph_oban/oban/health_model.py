"""How the `oban_jobs` table is doing: the report `health()` (cinegraph_oban.oban.health and its
asyncio twin) returns, and the warnings drawn from it.

Everything here is read-only and uses PostgreSQL's own statistics views; the GIN pending lists
are read through the `pgstattuple` extension when it is installed (this package never creates
extensions). Each finding that needs attention comes with what to do about it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["GinIndexHealth", "Health", "QueueHealth", "warnings_of"]

#: Dead row versions worth a warning: this many, and at least this share of the live ones.
DEAD_ROWS_WARNING = 10_000
DEAD_SHARE_WARNING = 0.2
#: A GIN pending list this long (bytes) makes every unique lookup and meta query slower (bench:
#: lookups 3x slower with ~1,000 pending rows, ~110 kB of args).
PENDING_BYTES_WARNING = 256 << 10
#: Available jobs waiting this long (seconds) suggest no Oban node runs their queue.
WAIT_WARNING_SECONDS = 300.0
PAGE_BYTES = 8192


@dataclass(frozen=True, slots=True)
class GinIndexHealth:
    index: str
    bytes: int
    fastupdate: str
    pending_limit_kb: int | None
    pending_pages: int | None
    pending_tuples: int | None


@dataclass(frozen=True, slots=True)
class QueueHealth:
    queue: str
    available: int
    oldest_wait_seconds: float


@dataclass(frozen=True, slots=True)
class Health:
    prefix: str
    version: int
    jobs_by_state: dict[str, int]
    live_rows: int
    dead_rows: int
    last_vacuum: datetime | None
    last_analyze: datetime | None
    table_bytes: int
    total_bytes: int
    gin_indexes: list[GinIndexHealth]
    queues: list[QueueHealth]
    pending_lists_measured: bool
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("last_vacuum", "last_analyze"):
            value = out[key]
            out[key] = value.isoformat() if value is not None else None
        return out


def warnings_of(h: Health) -> list[str]:
    out = []
    if h.dead_rows >= DEAD_ROWS_WARNING and h.dead_rows >= DEAD_SHARE_WARNING * max(h.live_rows, 1):
        out.append(
            f"{h.prefix}.oban_jobs has {h.dead_rows:,} dead row versions for {h.live_rows:,} live ones "
            f"(last vacuum: {h.last_vacuum or 'never'}): Oban's fetches and the Pruner slow down; run "
            f"VACUUM {h.prefix}.oban_jobs, and lower autovacuum_vacuum_scale_factor for this table"
        )
    for gin in h.gin_indexes:
        if gin.pending_pages is not None and gin.pending_pages * PAGE_BYTES >= PENDING_BYTES_WARNING:
            out.append(
                f"{gin.index}: {gin.pending_tuples:,} rows ({gin.pending_pages * PAGE_BYTES // 1024:,} kB) wait in "
                f"its GIN pending list, which every unique lookup and meta query reads; VACUUM the table, or "
                f"ALTER INDEX {h.prefix}.{gin.index} SET (gin_pending_list_limit = 64) to keep the list short"
            )
    for queue in h.queues:
        if queue.oldest_wait_seconds >= WAIT_WARNING_SECONDS:
            out.append(
                f"queue {queue.queue!r}: {queue.available:,} available jobs, the oldest waiting "
                f"{queue.oldest_wait_seconds / 60:.0f} min: is an Oban node running this queue?"
            )
    return out
