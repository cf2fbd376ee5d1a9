"""cinegraph-oban: write Oban jobs from Python that Elixir Oban cannot tell from its own.

The public API is re-exported here; everything else may change.

Three words, each with one meaning:
- a **prefix** is the PostgreSQL schema that holds Oban's `oban_jobs` table (Oban's own word:
  `Oban.Migration.up(prefix: "private")`); `--prefix` on the command line;
- a **schema** is a PostgreSQL schema and nothing else: the migration's `--schema` is the one
  holding the legacy tables and Ecto's `schema_migrations`;
- the **Oban table** is what Oban's migrations installed under a prefix, at a version:
  `ObanTable`, which `detect` reads from the catalogs and `Oban.table()` caches (`ObanSchema`
  and `Oban.schema()` are its earlier names). `cinegraph-oban schema install` keeps the name
  Ecto gives migrations: it installs Oban's tables, at a version, under a prefix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cinegraph_oban.db.identifiers import check_prefix
from cinegraph_oban.errors import (
    CinegraphObanError,
    ConnectionArgumentError,
    DatabaseError,
    DatabaseUnavailableError,
    DatabaseUrlError,
    IsolationLevelError,
    JobNotFoundError,
    LockNotAcquiredError,
    MigrationInterruptedError,
    Problem,
    SessionRequiredError,
    UnsupportedSchemaError,
    ValidationError,
    VerificationError,
)
from cinegraph_oban.insert.client import InsertedJobs, Oban
from cinegraph_oban.insert.client_async import AsyncOban
from cinegraph_oban.meta.outcomes import merge_job_meta, record_failed_lookup, record_skipped_import
from cinegraph_oban.meta.records import FailedLookup, SkippedImport, from_meta, merge_meta, to_meta
from cinegraph_oban.model.job import Job
from cinegraph_oban.model.unique import JOB_STATES, Unique
from cinegraph_oban.model.workers import DEFAULT_REGISTRY, TMDB_DETAILS_WORKER, WorkerRegistry, WorkerSpec
from cinegraph_oban.oban import engine
from cinegraph_oban.oban.table import LATEST_VERSION, ObanSchema, ObanTable, detect, install

if TYPE_CHECKING:
    from cinegraph_oban.meta.queries import (
        FAILED_STATES,
        JobQuery,
        failed_lookups,
        jobs,
        oban_jobs_table,
        quality_skipped_imports,
        read_failed_lookups,
        read_skipped_imports,
    )

__version__ = "0.1.0"

# The query builders need SQLAlchemy, which takes a third of a second to import: they are
# imported on first use, so enqueueing code and the command line start without it.
_QUERIES = frozenset(
    {
        "FAILED_STATES",
        "JobQuery",
        "failed_lookups",
        "jobs",
        "oban_jobs_table",
        "quality_skipped_imports",
        "read_failed_lookups",
        "read_skipped_imports",
    }
)


def __getattr__(name: str) -> Any:
    if name not in _QUERIES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from cinegraph_oban.meta import queries

    value = getattr(queries, name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_REGISTRY",
    "FAILED_STATES",
    "JOB_STATES",
    "LATEST_VERSION",
    "TMDB_DETAILS_WORKER",
    "AsyncOban",
    "CinegraphObanError",
    "ConnectionArgumentError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DatabaseUrlError",
    "FailedLookup",
    "InsertedJobs",
    "IsolationLevelError",
    "Job",
    "JobNotFoundError",
    "JobQuery",
    "LockNotAcquiredError",
    "MigrationInterruptedError",
    "Oban",
    "ObanSchema",
    "ObanTable",
    "Problem",
    "SessionRequiredError",
    "SkippedImport",
    "Unique",
    "UnsupportedSchemaError",
    "ValidationError",
    "VerificationError",
    "WorkerRegistry",
    "WorkerSpec",
    "__version__",
    "check_prefix",
    "detect",
    "engine",
    "failed_lookups",
    "from_meta",
    "install",
    "jobs",
    "merge_job_meta",
    "merge_meta",
    "oban_jobs_table",
    "quality_skipped_imports",
    "read_failed_lookups",
    "read_skipped_imports",
    "record_failed_lookup",
    "record_skipped_import",
    "to_meta",
]
