"""Export: both legacy tables streamed to `<export_dir>/<table>.jsonl.gz` with a manifest (row
counts, SHA-256), written atomically; and reading an export back, checked against its manifest.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from cinegraph_oban.errors import (
    VerificationError,
)
from cinegraph_oban.migration.legacy import LEGACY_TABLES
from cinegraph_oban.migration.steps import MigrationBase, _crash_point, one_run
from cinegraph_oban.model.timestamps import utc_now
from cinegraph_oban.sql import builder

__all__ = ["Export"]


class Export(MigrationBase):
    """Writing and reading the export."""

    @one_run
    def export(self, rows: dict[str, int] | None = None) -> dict[str, Any]:
        """Stream both tables to compressed JSON Lines with a manifest; returns the manifest.

        `rows`, each table's row count if the caller has just counted it (for the progress
        report); otherwise each table is counted first.
        """
        counted = rows or {}
        files = self._per_table(lambda conn, table: self._export_table(conn, table, counted.get(table)))
        manifest: dict[str, Any] = {
            "migration": self.name,
            "created_at": utc_now().isoformat() + "Z",
            "database": files.pop("_database", None),
            "schema": self.schema,
            "tables": {table: files[table] for table in LEGACY_TABLES},
        }
        temp = self.export_dir / "manifest.json.partial"
        with open(temp, "w", encoding="utf-8") as out:
            out.write(json.dumps(manifest, indent=2) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.export_dir / "manifest.json")
        _fsync_directory(self.export_dir)  # the renames of the data files and the manifest
        return manifest

    def _export_table(self, conn: psycopg.Connection[Any], table: str, total: int | None) -> dict[str, Any]:
        """One table through COPY into `<table>.jsonl.gz`, renamed into place only when whole.

        The COPY is in CSV form with a quote and a delimiter (0x01, 0x02) that JSON text never
        holds raw, so each line is the row's JSON exactly as PostgreSQL wrote it, and the bytes
        go to the compressor without a Python object per row.
        """
        _crash_point(f"export:{table}")
        self.export_dir.mkdir(parents=True, exist_ok=True)  # once a session is had: a refused URL makes none
        final = self.export_dir / f"{table}.jsonl.gz"
        partial = final.with_name(final.name + ".partial")
        if total is None:
            total = int(self._stats(conn, table)["rows"])
        rows = 0
        digest = hashlib.sha256()
        conn.execute(self._sql("export_encoding"), {})
        with (
            open(partial, "wb") as raw,
            _HashingWriter(raw, digest) as hashed,
            gzip.GzipFile(fileobj=hashed, mode="wb", compresslevel=self.compress_level, mtime=0) as out,
            conn.cursor() as cur,
            cur.copy(builder.unparametrized(self._sql("export_rows", table=table))) as copy,
        ):
            # COPY hands over a row at a time: write and report in ~1 MB pieces.
            pending: list[bytes] = []
            size = 0
            for data in copy:
                pending.append(bytes(data))
                size += len(data)
                if size >= 1 << 20:
                    rows += _write_lines(out, pending)
                    pending, size = [], 0
                    self.progress(f"export {table}", rows, total)
            rows += _write_lines(out, pending)
        self.progress(f"export {table}", rows, total)
        os.replace(partial, final)
        return {"file": final.name, "rows": rows, "sha256": digest.hexdigest()}

    def _manifest(self) -> dict[str, Any]:
        try:
            data = json.loads((self.export_dir / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _read_export(self, directory: Path) -> dict[str, list[str]]:
        manifest_path = directory / "manifest.json"
        if not manifest_path.exists():
            raise VerificationError(f"no manifest.json in {directory}: not an export made by `cinegraph-oban export`")
        try:
            return self._read_export_files(directory, manifest_path)
        except (KeyError, TypeError, ValueError, OSError, EOFError) as exc:  # JSON, gzip, UTF-8, a missing file
            raise VerificationError(
                f"{directory}: the export is damaged or incomplete ({type(exc).__name__}: {exc}); nothing was changed"
            ) from exc

    def _read_export_files(self, directory: Path, manifest_path: Path) -> dict[str, list[str]]:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        lines: dict[str, list[str]] = {}
        for table in LEGACY_TABLES:
            entry = manifest["tables"][table]
            path = directory / entry["file"]
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != entry["sha256"]:
                raise VerificationError(
                    f"{path}: SHA-256 {digest} differs from the manifest's {entry['sha256']}; the export is damaged"
                )
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                lines[table] = [line.rstrip("\n") for line in handle if line.strip()]
            if len(lines[table]) != entry["rows"]:
                raise VerificationError(f"{path}: {len(lines[table])} rows, the manifest says {entry['rows']}")
        return lines


def _fsync_directory(path: Path) -> None:
    """Make the renames in `path` durable (where the platform allows opening a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_lines(out: Any, pieces: list[bytes]) -> int:
    """Write COPY's pieces; returns how many lines (rows) they held."""
    data = b"".join(pieces)
    out.write(data)
    return data.count(b"\n")


class _HashingWriter:
    """A binary file wrapper that feeds everything written through it to a hash as well."""

    def __init__(self, raw: Any, digest: Any) -> None:
        self.raw = raw
        self.digest = digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return int(self.raw.write(data))

    def flush(self) -> None:
        self.raw.flush()

    def __enter__(self) -> _HashingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.flush()
        os.fsync(self.raw.fileno())


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
