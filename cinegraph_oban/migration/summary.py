"""What a migration command found and did: `MigrationSummary` with its `Finding`s, and how far
the backfill of a table got (`Backfilled`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["Backfilled", "Finding", "MigrationSummary"]


class Backfilled(NamedTuple):
    """How far the backfill of one table got."""

    archived: int  # archival jobs
    last_id: int  # the highest legacy id archived (0: none)
    last_job_id: int  # the archival job of that legacy id (0: none)


@dataclass(frozen=True, slots=True)
class Finding:
    """One kind of difference verify found in one table."""

    table: str
    kind: str
    rows: int
    example_ids: tuple[int, ...]

    def __str__(self) -> str:
        ids = ", ".join(map(str, self.example_ids))
        return (
            f"{self.table}: {self.rows} {self.kind} (ids {ids}{', ...' if self.rows > len(self.example_ids) else ''})"
        )


@dataclass
class MigrationSummary:
    """What a command did, for the CLI and for tests."""

    action: str
    rows: dict[str, int] = field(default_factory=dict)
    archived: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    export: str | None = None
    lock_held_seconds: float | None = None
    seconds: float = 0.0
    already_done: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    #: verify: archival jobs per table that nothing was compared with (tables gone, no export).
    unverified: dict[str, int] = field(default_factory=dict)
    #: verify, after `up`: exported rows per table whose archival jobs Oban's Pruner has deleted
    #: (the export holds them; a notice says so, not a finding).
    pruned: dict[str, int] = field(default_factory=dict)
    #: up: legacy ids per table archived again because a write touched them while up ran (the
    #: change capture), and ids queued because their archival jobs differed from their rows.
    caught_up: dict[str, int] = field(default_factory=dict)
    recompared: dict[str, int] = field(default_factory=dict)
    #: down: archival jobs per table that an unfinished `up` had written and down removed.
    removed: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "findings"}
        data["findings"] = [_finding_dict(f) for f in self.findings]
        return data


def _finding_dict(finding: Finding) -> dict[str, Any]:
    return {
        "table": finding.table,
        "kind": finding.kind,
        "rows": finding.rows,
        "example_ids": list(finding.example_ids),
    }
