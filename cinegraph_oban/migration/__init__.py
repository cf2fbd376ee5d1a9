"""The migration that retires `failed_imdb_lookups` and `skipped_imports`: the legacy tables as
the application made them (`legacy`), sample rows for the tour and the tests (`sample_data`), and
the migration itself with its steps (`remove_tables`). Its asyncio face is
`cinegraph_oban.asyncio.migration`."""

from __future__ import annotations

from cinegraph_oban.migration.legacy import legacy_kinds
from cinegraph_oban.migration.remove_tables import (
    DEFAULT_VERSION,
    EXPECTED_COLUMNS,
    LEGACY_TABLES,
    Finding,
    MigrationSummary,
    RemoveRedundantImportTables,
    create_legacy_tables,
    insert_legacy_row,
)

__all__ = [
    "DEFAULT_VERSION",
    "EXPECTED_COLUMNS",
    "LEGACY_TABLES",
    "Finding",
    "MigrationSummary",
    "RemoveRedundantImportTables",
    "create_legacy_tables",
    "insert_legacy_row",
    "legacy_kinds",
]
