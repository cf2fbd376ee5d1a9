"""The meta contract: the two legacy import tables as typed records, and their form in job meta.

`failed_imdb_lookups` and `skipped_imports` are being retired; what a row held now lives in the
`meta` of the `Cinegraph.Workers.TMDbDetailsWorker` job it is about. Each record carries every
column of its table with the column's type and limits, and maps to meta keys aligned with what
the Cinegraph worker already writes:

| record field | FailedLookup meta key | SkippedImport meta key |
|---|---|---|
| (marker) | `status: "failed"` | `status: "imported"`, `import_type: "soft"` |
| reason | `failure_reason` | `reason` |
| imdb_id / tmdb_id | `imdb_id` | `tmdb_id` |
| title | `title` | `movie_title` |
| year | `year` | |
| source, source_key | `source`, `source_key` | |
| metadata / criteria_failed | `metadata` | `quality_criteria_failed` |
| retry_count, last_retry_at | `retry_count`, `last_retry_at` | |
| checked_at | | `checked_at` |
| id | `legacy_id` | `legacy_id` |
| inserted_at, updated_at | `legacy_inserted_at`, `legacy_updated_at` | `legacy_inserted_at` |
| (table) | `legacy_table: "failed_imdb_lookups"` | `legacy_table: "skipped_imports"` |
| (SQL NULL jsonb) | `legacy_sql_nulls: ["metadata"]` or [] | `legacy_sql_nulls: ["quality_criteria_failed"]` or [] |

A job the Elixir worker finished itself holds less: its meta has what that worker merges (the
design document's worker writes only `failure_reason`, `imdb_id`, `title`), the rest is in the
job's args and timestamps. The readers (`cinegraph_oban.meta.queries.read_failed_lookups`,
`read_skipped_imports`) take what meta lacks from there, and a field that neither says is None
and named in the record's `unknown` (for a row this library wrote, `unknown` is empty). Such a
record is what a job said, not a whole legacy row: `to_meta()` writes its unknown fields as null,
and `from_meta` reads them back only when given the same `unknown`.

Every key is always written, with JSON null for NULL, so `from_meta(to_meta(r)) == r` for every
record. A jsonb column can hold SQL NULL or the JSON value null; Python reads both as None, so
`legacy_sql_nulls` names the jsonb columns that were SQL NULL and the migration's SQL restores
each exactly. Times are ISO 8601 UTC strings ending in `Z` (second precision for `timestamp(0)`
columns, microseconds otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from cinegraph_oban.errors import Problem, ValidationError
from cinegraph_oban.model.job import encode_json_object
from cinegraph_oban.model.timestamps import to_naive_utc, utc_now

__all__ = [
    "FailedLookup",
    "SkippedImport",
    "from_meta",
    "merge_meta",
    "to_meta",
]

VARCHAR_LIMIT = 255
INT4_MIN, INT4_MAX = -2_147_483_648, 2_147_483_647
INT8_MIN, INT8_MAX = -9_223_372_036_854_775_808, 9_223_372_036_854_775_807
NO_TMDB_MATCH = "no_tmdb_match"
QUALITY_CRITERIA = "quality_criteria"


def _format_time(value: datetime | None, seconds_only: bool) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="seconds" if seconds_only else "microseconds") + "Z"


def _parse_time(value: Any, key: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("meta", [Problem(key, f"expected an ISO 8601 time string, got {value!r}")])
    try:
        return to_naive_utc(datetime.fromisoformat(value.removesuffix("Z") + ("+00:00" if value.endswith("Z") else "")))
    except ValueError as exc:
        raise ValidationError("meta", [Problem(key, f"not an ISO 8601 time: {value!r}")]) from exc


def _check_text(problems: list[Problem], name: str, value: Any, *, nullable: bool) -> None:
    if value is None:
        if not nullable:
            problems.append(Problem(name, "is required (NOT NULL)"))
        return
    if not isinstance(value, str):
        problems.append(Problem(name, f"expected a string, got {type(value).__name__}"))
    elif len(value) > VARCHAR_LIMIT:
        problems.append(Problem(name, f"is {len(value)} characters; the column is varchar({VARCHAR_LIMIT})"))
    elif "\x00" in value:
        problems.append(Problem(name, "contains a NUL character, which PostgreSQL rejects"))
    else:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            problems.append(Problem(name, "contains a lone surrogate, which is not valid UTF-8"))


def _check_int(problems: list[Problem], name: str, value: Any, *, nullable: bool, low: int, high: int) -> None:
    if value is None:
        if not nullable:
            problems.append(Problem(name, "is required (NOT NULL)"))
        return
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(Problem(name, f"expected an integer, got {value!r}"))
    elif not low <= value <= high:
        problems.append(Problem(name, f"{value} is outside the column's range {low}..{high}"))


def _check_time(problems: list[Problem], name: str, value: Any, *, nullable: bool, seconds_only: bool) -> None:
    if value is None:
        if not nullable:
            problems.append(Problem(name, "is required (NOT NULL)"))
        return
    if not isinstance(value, datetime):
        problems.append(Problem(name, f"expected a datetime, got {value!r}"))
    elif value.tzinfo is not None:
        problems.append(Problem(name, "must be a naive UTC datetime (use .new(), which converts aware ones)"))
    elif seconds_only and value.microsecond:
        problems.append(Problem(name, "has microseconds, but the column is timestamp(0); PostgreSQL would round them"))


def _check_json(problems: list[Problem], name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(Problem(name, f"{value!r} is not valid JSON"))
        return
    _, found = encode_json_object({"v": value}, name)
    problems.extend(Problem(p.field.replace(f"{name}['v']", name), p.message) for p in found)


class _Record:
    """What both records share: validation on construction and the meta round trip."""

    table: ClassVar[str]
    #: The fields a job may leave unsaid (see `unknown`).
    unknowable: ClassVar[tuple[str, ...]]
    unknown: tuple[str, ...]

    def _problems(self) -> list[Problem]:
        raise NotImplementedError

    def _unknown_problems(self) -> list[Problem]:
        problems: list[Problem] = []
        if not isinstance(self.unknown, tuple):
            return [Problem("unknown", f"expected a tuple of field names, got {self.unknown!r}")]
        for name in self.unknown:
            if name not in self.unknowable:
                problems.append(Problem("unknown", f"{name!r} is not a field a job can leave unsaid"))
            elif getattr(self, name) is not None:
                problems.append(Problem(name, "is named unknown but holds a value"))
        return problems

    def _validate(self) -> None:
        problems = self._unknown_problems() + self._problems()
        if problems:
            raise ValidationError(f"{self.table} row", problems)


@dataclass(frozen=True, slots=True)
class FailedLookup(_Record):
    """One row of `failed_imdb_lookups`: an IMDb id TMDb had no movie for.

    `unknown` names the fields the job it was read from did not say (neither its meta nor its
    args): each is None here, whatever the row would have held, and `source` can be None only
    so. Empty for every record built with `new()` or read from a job this library recorded.
    """

    table: ClassVar[str] = "failed_imdb_lookups"
    unknowable: ClassVar[tuple[str, ...]] = (
        "title",
        "year",
        "source",
        "source_key",
        "metadata",
        "retry_count",
        "last_retry_at",
    )

    imdb_id: str
    source: str | None
    reason: str
    inserted_at: datetime
    updated_at: datetime
    title: str | None = None
    year: int | None = None
    source_key: str | None = None
    metadata: Any = None
    retry_count: int | None = 0
    last_retry_at: datetime | None = None
    id: int | None = None
    unknown: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._validate()

    @classmethod
    def new(
        cls,
        imdb_id: str,
        source: str,
        *,
        reason: str = NO_TMDB_MATCH,
        title: str | None = None,
        year: int | None = None,
        source_key: str | None = None,
        metadata: Any = None,
        retry_count: int | None = 0,
        last_retry_at: datetime | None = None,
        at: datetime | None = None,
    ) -> FailedLookup:
        """A new outcome, stamped now (to the second, as the table's timestamp(0) columns)."""
        stamp = to_naive_utc(at or utc_now()).replace(microsecond=0)
        return cls(
            imdb_id=imdb_id,
            source=source,
            reason=reason,
            inserted_at=stamp,
            updated_at=stamp,
            title=title,
            year=year,
            source_key=source_key,
            metadata={} if metadata is None else metadata,
            retry_count=retry_count,
            last_retry_at=to_naive_utc(last_retry_at).replace(microsecond=0) if last_retry_at else None,
        )

    def _problems(self) -> list[Problem]:
        problems: list[Problem] = []
        _check_text(problems, "imdb_id", self.imdb_id, nullable=False)
        _check_text(problems, "source", self.source, nullable="source" in self.unknown)
        _check_text(problems, "reason", self.reason, nullable=False)
        _check_text(problems, "title", self.title, nullable=True)
        _check_text(problems, "source_key", self.source_key, nullable=True)
        _check_int(problems, "year", self.year, nullable=True, low=INT4_MIN, high=INT4_MAX)
        _check_int(problems, "retry_count", self.retry_count, nullable=True, low=INT4_MIN, high=INT4_MAX)
        _check_int(problems, "id", self.id, nullable=True, low=1, high=INT8_MAX)
        _check_time(problems, "inserted_at", self.inserted_at, nullable=False, seconds_only=True)
        _check_time(problems, "updated_at", self.updated_at, nullable=False, seconds_only=True)
        _check_time(problems, "last_retry_at", self.last_retry_at, nullable=True, seconds_only=True)
        _check_json(problems, "metadata", self.metadata)
        return problems

    def to_meta(self) -> dict[str, Any]:
        return {
            "status": "failed",
            "failure_reason": self.reason,
            "imdb_id": self.imdb_id,
            "title": self.title,
            "year": self.year,
            "source": self.source,
            "source_key": self.source_key,
            "metadata": self.metadata,
            "retry_count": self.retry_count,
            "last_retry_at": _format_time(self.last_retry_at, True),
            "legacy_table": self.table,
            "legacy_id": self.id,
            "legacy_inserted_at": _format_time(self.inserted_at, True),
            "legacy_updated_at": _format_time(self.updated_at, True),
            "legacy_sql_nulls": ["metadata"] if self.metadata is None else [],
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], *, unknown: tuple[str, ...] = ()) -> FailedLookup:
        """The record `meta` holds; `unknown` names fields meta does not say (None, not required)."""
        required = ("failure_reason", "imdb_id", "source", "legacy_inserted_at", "legacy_updated_at")
        _require(meta, tuple(key for key in required if key not in unknown), cls.table)
        inserted_at = _parse_time(meta["legacy_inserted_at"], "legacy_inserted_at")
        updated_at = _parse_time(meta["legacy_updated_at"], "legacy_updated_at")
        assert inserted_at is not None and updated_at is not None
        return cls(
            id=meta.get("legacy_id"),
            imdb_id=meta["imdb_id"],
            title=meta.get("title"),
            year=meta.get("year"),
            source=meta.get("source"),
            source_key=meta.get("source_key"),
            reason=meta["failure_reason"],
            metadata=meta.get("metadata"),
            retry_count=meta.get("retry_count"),
            last_retry_at=_parse_time(meta.get("last_retry_at"), "last_retry_at"),
            inserted_at=inserted_at,
            updated_at=updated_at,
            unknown=unknown,
        )


@dataclass(frozen=True, slots=True)
class SkippedImport(_Record):
    """One row of `skipped_imports`: a movie soft-imported because it failed quality criteria.

    `unknown` names the fields the job it was read from did not say (None here), as for
    `FailedLookup`.
    """

    table: ClassVar[str] = "skipped_imports"
    unknowable: ClassVar[tuple[str, ...]] = ("title", "reason", "criteria_failed")

    tmdb_id: int
    inserted_at: datetime
    title: str | None = None
    reason: str | None = QUALITY_CRITERIA
    criteria_failed: Any = None
    checked_at: datetime | None = None
    id: int | None = None
    unknown: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._validate()

    @classmethod
    def new(
        cls,
        tmdb_id: int,
        *,
        title: str | None = None,
        reason: str | None = QUALITY_CRITERIA,
        criteria_failed: Any = None,
        at: datetime | None = None,
    ) -> SkippedImport:
        """A new outcome, checked and stamped now (microseconds, as the table's columns)."""
        stamp = to_naive_utc(at or utc_now())
        return cls(
            tmdb_id=tmdb_id,
            title=title,
            reason=reason,
            criteria_failed=criteria_failed,
            checked_at=stamp,
            inserted_at=stamp,
        )

    def _problems(self) -> list[Problem]:
        problems: list[Problem] = []
        _check_int(problems, "tmdb_id", self.tmdb_id, nullable=False, low=INT4_MIN, high=INT4_MAX)
        _check_text(problems, "title", self.title, nullable=True)
        _check_text(problems, "reason", self.reason, nullable=True)
        _check_int(problems, "id", self.id, nullable=True, low=1, high=INT8_MAX)
        _check_time(problems, "checked_at", self.checked_at, nullable=True, seconds_only=False)
        _check_time(problems, "inserted_at", self.inserted_at, nullable=False, seconds_only=False)
        _check_json(problems, "criteria_failed", self.criteria_failed)
        return problems

    def to_meta(self) -> dict[str, Any]:
        return {
            "status": "imported",
            "import_type": "soft",
            "tmdb_id": self.tmdb_id,
            "movie_title": self.title,
            "reason": self.reason,
            "quality_criteria_failed": self.criteria_failed,
            "checked_at": _format_time(self.checked_at, False),
            "legacy_table": self.table,
            "legacy_id": self.id,
            "legacy_inserted_at": _format_time(self.inserted_at, False),
            "legacy_sql_nulls": ["quality_criteria_failed"] if self.criteria_failed is None else [],
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], *, unknown: tuple[str, ...] = ()) -> SkippedImport:
        """The record `meta` holds; `unknown` names fields meta does not say (None)."""
        _require(meta, ("tmdb_id", "legacy_inserted_at"), cls.table)
        inserted_at = _parse_time(meta["legacy_inserted_at"], "legacy_inserted_at")
        assert inserted_at is not None
        return cls(
            id=meta.get("legacy_id"),
            tmdb_id=meta["tmdb_id"],
            title=meta.get("movie_title"),
            reason=meta.get("reason"),
            criteria_failed=meta.get("quality_criteria_failed"),
            checked_at=_parse_time(meta.get("checked_at"), "checked_at"),
            inserted_at=inserted_at,
            unknown=unknown,
        )


def _require(meta: Mapping[str, Any], keys: tuple[str, ...], table: str) -> None:
    missing = [k for k in keys if k not in meta or (meta[k] is None and k != "legacy_id")]
    if missing:
        raise ValidationError(f"meta for a {table} record", [Problem(k, "is missing") for k in missing])


Record = FailedLookup | SkippedImport


def to_meta(record: Record) -> dict[str, Any]:
    """The meta patch that records `record` on its job."""
    return record.to_meta()


def from_meta(meta: Mapping[str, Any]) -> Record:
    """The record a job's meta holds: a failed lookup (`failure_reason`) or a soft import."""
    if "failure_reason" in meta:
        return FailedLookup.from_meta(meta)
    if meta.get("import_type") == "soft":
        return SkippedImport.from_meta(meta)
    raise ValidationError("meta", [Problem("meta", "holds neither a failed lookup (failure_reason) nor a soft import")])


def merge_meta(existing: Mapping[str, Any] | None, patch: Mapping[str, Any]) -> dict[str, Any]:
    """`Map.merge(existing || %{}, patch)`: every existing key stays, the patch wins on a clash."""
    return {**(existing or {}), **patch}
