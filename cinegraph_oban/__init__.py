"""cinegraph-oban: write Oban jobs from Python that Elixir Oban cannot tell from its own.

The public API is re-exported here; everything else may change.
"""

from __future__ import annotations

from cinegraph_oban.client import Oban
from cinegraph_oban.errors import (
    CinegraphObanError,
    DatabaseUnavailableError,
    JobNotFoundError,
    LockNotAcquiredError,
    Problem,
    UnsupportedSchemaError,
    ValidationError,
    VerificationError,
)
from cinegraph_oban.job import Job
from cinegraph_oban.schema import LATEST_VERSION, ObanSchema, detect, install
from cinegraph_oban.unique import JOB_STATES, Unique
from cinegraph_oban.workers import DEFAULT_REGISTRY, TMDB_DETAILS_WORKER, WorkerRegistry, WorkerSpec

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_REGISTRY",
    "JOB_STATES",
    "LATEST_VERSION",
    "TMDB_DETAILS_WORKER",
    "CinegraphObanError",
    "DatabaseUnavailableError",
    "Job",
    "JobNotFoundError",
    "LockNotAcquiredError",
    "Oban",
    "ObanSchema",
    "Problem",
    "Unique",
    "UnsupportedSchemaError",
    "ValidationError",
    "VerificationError",
    "WorkerRegistry",
    "WorkerSpec",
    "__version__",
    "detect",
    "install",
]
