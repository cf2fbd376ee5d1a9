"""Verify: every legacy row (or exported row) against the row its archival job maps back to,
whole rows compared, and what Oban's Pruner removed told apart from what was lost.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import psycopg

from cinegraph_oban.migration.export import Export, chunks
from cinegraph_oban.migration.legacy import LEGACY_TABLES
from cinegraph_oban.migration.steps import _crash_point, one_run
from cinegraph_oban.migration.summary import Finding, MigrationSummary
from cinegraph_oban.model.timestamps import utc_now
from cinegraph_oban.oban.table import detect

__all__ = ["Verify"]


class Verify(Export):
    """The checks of `migrate verify` and of `up` before it drops anything."""

    def _verify(self) -> list[Finding]:
        def check(conn: psycopg.Connection[Any], table: str) -> list[Finding]:
            _crash_point(f"verify:{table}")
            return self._findings(conn, "verify", table)

        found = self._per_table(check)
        return [f for table in LEGACY_TABLES for f in found[table]]

    @one_run
    def verify(self, *, recent_seconds: int = 7 * 86_400) -> MigrationSummary:
        """The read-only checks for a live database, whichever apply now.

        Before `up`: every legacy row would round-trip through the meta contract. Between backfill
        and drop: every legacy row against its archival job. After `up`: every exported row
        against its archival job. Always: recent TMDbDetailsWorker outcomes carry the keys the
        meta contract requires (the new worker code works).
        """
        summary = MigrationSummary(action="verify")
        started = time.perf_counter()
        with self._connect() as conn:
            detect(conn, self.prefix)
            present = [t for t in LEGACY_TABLES if self._kind(conn, t) == "r"]
            captured = bool(present) and self._capture_present(conn)

            def check(bulk: psycopg.Connection[Any], table: str) -> tuple[int, int, list[Finding], int]:
                # On a bulk session each, both tables at once, as up's own verify: the comparison
                # is a hash join of every row, which spills to disk with a default work_mem.
                rows = int(self._stats(bulk, table)["rows"])
                self.progress(f"verify {table}", 0, rows)
                findings = self._findings(bulk, "representable", table)
                archived = self._archived(bulk, table).archived
                if archived:
                    findings += self._findings(bulk, "verify", table, capture=captured)
                self.progress(f"verify {table}", rows, rows)
                return rows, archived, findings, self._pending(bulk, table) if captured else 0

            checked = self._in_parallel(present, check) if present else {}
            for table in present:
                rows, archived, findings, pending = checked[table]
                summary.rows[table], summary.archived[table] = rows, archived
                summary.findings += findings
                if pending:
                    summary.notices.append(
                        f"{table}: {pending:,} writes since `up` stopped are captured but not archived yet (their rows "
                        "are not compared here); `cinegraph-oban migrate up` applies them and finishes"
                    )
            absent = [t for t in LEGACY_TABLES if t not in present]
            for table in absent:
                summary.archived[table] = self._archived(conn, table).archived
            if absent:
                manifest = self.export_dir / "manifest.json"
                if manifest.exists():
                    exported = self._read_export(self.export_dir)
                    for table in absent:
                        summary.rows[table] = len(exported[table])
                        findings = self._export_findings(conn, table, exported[table], summary.archived[table])
                        summary.findings += self._pruned(conn, summary, table, exported[table], findings)
                else:
                    # The tables are gone and there is no export in export_dir: these archival jobs
                    # could not be compared with anything (callers treat that as a failed check).
                    summary.unverified = {t: summary.archived[t] for t in absent if summary.archived[t]}
                    for table in (t for t in absent if not summary.archived[t]):
                        summary.notices.append(
                            f"{table}: the table is gone and no archival job of it is left (Oban's Pruner deletes "
                            f"them after its max_age; Cinegraph keeps 7 days), and there is no export in "
                            f"{self.export_dir} to check: nothing was verified for it. Pass --export-dir <the "
                            "directory `migrate up` exported to>; that export holds its rows"
                        )
            rows = conn.execute(self._sql("new_worker_meta"), {"seconds": recent_seconds}).fetchall()
            summary.findings += [Finding("oban_jobs", kind, int(n), tuple(ids or ())) for kind, n, ids in rows]
        summary.seconds = time.perf_counter() - started
        return summary

    def _findings(self, conn: psycopg.Connection[Any], check: str, table: str, **extra: Any) -> list[Finding]:
        rows = conn.execute(self._sql(check, table=table, **extra), {}).fetchall()
        return [Finding(table, kind, int(n), tuple(ids or ())) for kind, n, ids in rows]

    def _pruned(
        self,
        conn: psycopg.Connection[Any],
        summary: MigrationSummary,
        table: str,
        lines: list[str],
        findings: list[Finding],
    ) -> list[Finding]:
        """`findings` without the exported rows whose archival jobs Oban's Pruner deleted.

        After `up` every exported row had an archival job (the drop refuses otherwise), so a row
        without one lost it since. The Pruner deletes finished jobs whose final timestamp is past
        its max_age; the backfill archives in id order with one timestamp per run, so what it has
        deleted is every row below the lowest legacy id still archived (all rows, once it is
        through). Those are reported as pruned, in a notice: the export holds them, and `down
        --from-export` restores them. Jobs missing in any other pattern (someone deleted them) and
        jobs whose content differs stay findings.
        """
        missing = next((f for f in findings if f.kind == "missing"), None)
        if missing is None:
            return findings
        row = conn.execute(self._sql("archived_first_id", table=table), {}).fetchone()
        first_id = row[0] if row else None
        ids = [int(json.loads(line)["row"]["id"]) for line in lines]
        below = len(ids) if first_id is None else sum(1 for i in ids if i < first_id)
        manifest = self._manifest()
        file = self.export_dir / str(manifest.get("tables", {}).get(table, {}).get("file", f"{table}.jsonl.gz"))
        checked = self.export_dir / "manifest.json"
        holds = (
            f"the export holds every one of them: {file} (its SHA-256 checked against {checked}); "
            f"`cinegraph-oban migrate down --from-export {self.export_dir}` restores from it. Keep that export: "
            "it, not job meta, is the permanent archive"
        )
        if missing.rows != below:
            summary.notices.append(
                f"{table}: {missing.rows:,} exported rows have no archival job, and not in the pattern Oban's Pruner "
                "leaves (it deletes every archival job past its max_age, the oldest run first), so they were deleted "
                "some other way, or the Pruner is part-way through (it deletes at most 10,000 jobs a run: verify "
                f"again in a minute). {holds}"
            )
            return findings
        summary.pruned[table] = missing.rows
        state, stamp = (
            ("discarded", "discarded_at") if table == "failed_imdb_lookups" else ("completed", "scheduled_at")
        )
        created = manifest.get("created_at")
        when = f", {_age(created)} ago (the export's created_at, {created})" if isinstance(created, str) else ""
        ids_text = ", ".join(map(str, missing.example_ids)) + (
            ", ..." if missing.rows > len(missing.example_ids) else ""
        )
        summary.notices.append(
            f"{table}: {missing.rows:,} of its {len(ids):,} exported rows no longer have an archival job (legacy ids "
            f"{ids_text}). Not data loss: they were most likely pruned by Oban's Pruner, which deletes {state} jobs "
            f"once their {stamp} is older than its max_age (Cinegraph keeps 7 days; Oban's default is 60 seconds), "
            f"and these were archived by `migrate up`{when}. {holds}"
        )
        return [f for f in findings if f is not missing]

    def _export_findings(
        self, conn: psycopg.Connection[Any], table: str, lines: list[str], archived: int
    ) -> list[Finding]:
        """Every exported row against its archival job; `archived` counts the table's archival jobs."""
        totals: dict[str, tuple[int, list[int]]] = {}
        for chunk in chunks(lines, 10_000):
            ids = [int(json.loads(line)["row"]["id"]) for line in chunk]
            for kind, n, example in conn.execute(self._sql("verify_export", table=table), {"lines": chunk, "ids": ids}):
                count, examples = totals.get(kind, (0, []))
                totals[kind] = (count + int(n), (examples + list(example or ()))[:20])
        findings = [Finding(table, kind, n, tuple(ex)) for kind, (n, ex) in sorted(totals.items())]
        if archived > len(lines):
            findings.append(Finding(table, "archival jobs beyond the export", archived - len(lines), ()))
        return findings


def _age(created_at: str) -> str:
    """How long ago an ISO 8601 UTC time was, roughly ("8 days", "3 hours", "45 seconds")."""
    try:
        then = datetime.fromisoformat(created_at.removesuffix("Z"))
    except ValueError:
        return "some time"
    seconds = max(int((utc_now() - then.replace(tzinfo=None)).total_seconds()), 0)
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
