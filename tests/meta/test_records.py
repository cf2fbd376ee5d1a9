"""The meta contract: records, their meta form, and the merge (pure, no database)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given

from cinegraph_oban import FailedLookup, Problem, SkippedImport, ValidationError, from_meta, merge_meta, to_meta
from tests import strategies as s


@given(record=s.records(), existing=s.enqueue_meta())
def test_the_merged_meta_gives_back_exactly_the_record(record: FailedLookup | SkippedImport, existing: dict) -> None:
    merged = merge_meta(existing, to_meta(record))
    assert from_meta(merged) == record
    # Every key given at enqueue time survives unless the record writes the same key.
    patch = to_meta(record)
    assert {k: v for k, v in merged.items() if k not in patch} == {k: v for k, v in existing.items() if k not in patch}


@given(existing=s.json_objects(), patch=s.json_objects())
def test_merge_is_map_merge(existing: dict, patch: dict) -> None:
    merged = merge_meta(existing, patch)
    assert set(merged) == set(existing) | set(patch)
    assert all(merged[k] == v for k, v in patch.items())
    assert all(merged[k] == v for k, v in existing.items() if k not in patch)
    assert merge_meta(None, patch) == patch


def test_the_keys_match_what_the_worker_writes() -> None:
    failed = FailedLookup.new(
        "tt0111161", "canonical_import", title="X", year=1994, source_key="1001_movies", metadata={"a": 1}
    )
    meta = to_meta(failed)
    assert {
        k: meta[k] for k in ("status", "failure_reason", "imdb_id", "title", "year", "source", "source_key", "metadata")
    } == {
        "status": "failed",
        "failure_reason": "no_tmdb_match",
        "imdb_id": "tt0111161",
        "title": "X",
        "year": 1994,
        "source": "canonical_import",
        "source_key": "1001_movies",
        "metadata": {"a": 1},
    }
    soft = to_meta(SkippedImport.new(278, title="Shawshank", criteria_failed={"failed_criteria": ["votes"]}))
    assert {
        k: soft[k] for k in ("status", "import_type", "tmdb_id", "movie_title", "quality_criteria_failed", "reason")
    } == {
        "status": "imported",
        "import_type": "soft",
        "tmdb_id": 278,
        "movie_title": "Shawshank",
        "quality_criteria_failed": {"failed_criteria": ["votes"]},
        "reason": "quality_criteria",
    }


def test_new_records_are_stamped_at_the_columns_precision() -> None:
    at = datetime(2025, 8, 4, 9, 30, 0, 654321, tzinfo=timezone(timedelta(hours=2)))
    failed = FailedLookup.new("tt1", "oscar_import", at=at)
    assert failed.inserted_at == failed.updated_at == datetime(2025, 8, 4, 7, 30, 0)
    skipped = SkippedImport.new(1, at=at)
    assert skipped.inserted_at == skipped.checked_at == datetime(2025, 8, 4, 7, 30, 0, 654321)
    assert FailedLookup.new("tt1", "x").inserted_at <= datetime.now(UTC).replace(tzinfo=None)


def test_invalid_records_name_every_column() -> None:
    with pytest.raises(ValidationError) as info:
        FailedLookup(
            imdb_id="t" * 256,
            source=None,  # type: ignore[arg-type]
            reason="x\x00",
            year=2**31,
            metadata={"x": float("nan")},
            inserted_at=datetime(2025, 1, 1, 0, 0, 0, 5),
            updated_at=datetime(2025, 1, 1, tzinfo=UTC),
        )
    fields = {p.field for p in info.value.problems}
    assert fields == {"imdb_id", "source", "reason", "year", "metadata['x']", "inserted_at", "updated_at"}
    messages = " ".join(p.message for p in info.value.problems)
    assert "varchar(255)" in messages and "timestamp(0)" in messages and "NOT NULL" in messages


def test_from_meta_refuses_meta_without_a_record() -> None:
    with pytest.raises(ValidationError, match="neither"):
        from_meta({"import_type": "canonical"})
    with pytest.raises(ValidationError, match="legacy_inserted_at"):
        FailedLookup.from_meta({"failure_reason": "no_tmdb_match", "imdb_id": "tt1", "source": "x"})


# A valid row of each table; the tests below change one column at a time.
FAILED_ROW: dict[str, Any] = {
    "imdb_id": "tt0111161",
    "source": "canonical_import",
    "reason": "no_tmdb_match",
    "inserted_at": datetime(2025, 8, 4, 7, 30),
    "updated_at": datetime(2025, 8, 4, 7, 30),
}
SKIPPED_ROW: dict[str, Any] = {"tmdb_id": 278, "inserted_at": datetime(2025, 8, 4, 7, 30, 0, 654321)}
NOT_NULL = "is required (NOT NULL)"
TIMESTAMP_0 = "has microseconds, but the column is timestamp(0); PostgreSQL would round them"
NAIVE = "must be a naive UTC datetime (use .new(), which converts aware ones)"
INT4_RANGE = "the column's range -2147483648..2147483647"
AWARE = datetime(2025, 8, 4, 9, 30, tzinfo=timezone(timedelta(hours=2)))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("imdb_id", None, NOT_NULL),
        ("imdb_id", 111161, "expected a string, got int"),
        ("imdb_id", "tt\x00111161", "contains a NUL character, which PostgreSQL rejects"),
        ("imdb_id", "tt\ud800", "contains a lone surrogate, which is not valid UTF-8"),
        ("source", None, NOT_NULL),
        ("source", "s" * 256, "is 256 characters; the column is varchar(255)"),
        ("reason", None, NOT_NULL),
        ("reason", b"no_tmdb_match", "expected a string, got bytes"),
        ("title", "t" * 256, "is 256 characters; the column is varchar(255)"),
        ("title", "\ud800", "contains a lone surrogate, which is not valid UTF-8"),
        ("source_key", "k" * 300, "is 300 characters; the column is varchar(255)"),
        ("source_key", 1001, "expected a string, got int"),
        ("year", "1994", "expected an integer, got '1994'"),
        ("year", True, "expected an integer, got True"),
        ("year", 2**31, f"2147483648 is outside {INT4_RANGE}"),
        ("retry_count", -(2**31) - 1, f"-2147483649 is outside {INT4_RANGE}"),
        ("retry_count", 1.0, "expected an integer, got 1.0"),
        ("id", 0, "0 is outside the column's range 1..9223372036854775807"),
        ("id", "7", "expected an integer, got '7'"),
        ("inserted_at", None, NOT_NULL),
        ("inserted_at", "2025-08-04T07:30:00Z", "expected a datetime, got '2025-08-04T07:30:00Z'"),
        ("inserted_at", AWARE, NAIVE),
        ("updated_at", None, NOT_NULL),
        ("updated_at", datetime(2025, 8, 4, 7, 30, 0, 1), TIMESTAMP_0),
        ("last_retry_at", datetime(2025, 8, 4, 7, 30, 0, 500000), TIMESTAMP_0),
        ("last_retry_at", date(2025, 8, 4), "expected a datetime, got datetime.date(2025, 8, 4)"),
        ("last_retry_at", AWARE, NAIVE),
        ("metadata", float("nan"), "nan is not valid JSON"),
        ("metadata", {"votes": [1, float("inf")]}, "inf is not valid JSON; use null or a string"),
    ],
)
def test_an_invalid_failed_lookup_names_the_column_and_what_is_wrong(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        FailedLookup(**{**FAILED_ROW, field: value})
    where = "metadata['votes'][1]" if isinstance(value, dict) else field
    assert info.value.problems == (Problem(where, message),)
    assert str(info.value) == f"invalid failed_imdb_lookups row: {where}: {message}"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tmdb_id", None, NOT_NULL),
        ("tmdb_id", "278", "expected an integer, got '278'"),
        ("tmdb_id", 2**31, f"2147483648 is outside {INT4_RANGE}"),
        ("title", "t" * 256, "is 256 characters; the column is varchar(255)"),
        ("title", 1994, "expected a string, got int"),
        ("reason", "quality\x00criteria", "contains a NUL character, which PostgreSQL rejects"),
        ("reason", 0, "expected a string, got int"),
        ("id", -1, "-1 is outside the column's range 1..9223372036854775807"),
        ("id", 2**63, "9223372036854775808 is outside the column's range 1..9223372036854775807"),
        ("checked_at", AWARE, NAIVE),
        ("checked_at", "today", "expected a datetime, got 'today'"),
        ("inserted_at", None, NOT_NULL),
        ("inserted_at", AWARE, NAIVE),
        ("criteria_failed", float("-inf"), "-inf is not valid JSON"),
        ("criteria_failed", {"votes": float("nan")}, "nan is not valid JSON; use null or a string"),
    ],
)
def test_an_invalid_skipped_import_names_the_column_and_what_is_wrong(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        SkippedImport(**{**SKIPPED_ROW, field: value})
    where = "criteria_failed['votes']" if isinstance(value, dict) else field
    assert info.value.problems == (Problem(where, message),)
    assert str(info.value) == f"invalid skipped_imports row: {where}: {message}"


def test_nullable_columns_take_null_and_any_json_value() -> None:
    failed = FailedLookup(
        **FAILED_ROW, title=None, year=None, source_key=None, metadata=1.5, retry_count=None, last_retry_at=None
    )
    assert from_meta(to_meta(failed)) == failed
    skipped = SkippedImport(**SKIPPED_ROW, title=None, reason=None, criteria_failed=-2.5, checked_at=None)
    assert from_meta(to_meta(skipped)) == skipped
    # timestamp (not timestamp(0)) columns keep their microseconds.
    assert SkippedImport(**SKIPPED_ROW, checked_at=datetime(2025, 8, 4, 0, 0, 0, 1)).checked_at.microsecond == 1


def test_every_key_is_written_and_says_which_legacy_row_it_came_from() -> None:
    failed = to_meta(FailedLookup(**FAILED_ROW, id=7))
    assert failed == {
        "status": "failed",
        "failure_reason": "no_tmdb_match",
        "imdb_id": "tt0111161",
        "title": None,
        "year": None,
        "source": "canonical_import",
        "source_key": None,
        "metadata": None,
        "retry_count": 0,
        "last_retry_at": None,
        "legacy_table": "failed_imdb_lookups",
        "legacy_id": 7,
        "legacy_inserted_at": "2025-08-04T07:30:00Z",
        "legacy_updated_at": "2025-08-04T07:30:00Z",
        "legacy_sql_nulls": ["metadata"],
    }
    skipped = to_meta(SkippedImport(**SKIPPED_ROW, id=9))
    assert skipped == {
        "status": "imported",
        "import_type": "soft",
        "tmdb_id": 278,
        "movie_title": None,
        "reason": "quality_criteria",
        "quality_criteria_failed": None,
        "checked_at": None,
        "legacy_table": "skipped_imports",
        "legacy_id": 9,
        "legacy_inserted_at": "2025-08-04T07:30:00.654321Z",
        "legacy_sql_nulls": ["quality_criteria_failed"],
    }


@pytest.mark.parametrize("value", [{}, [], False, 0, "", {"a": None}])
def test_only_sql_null_jsonb_is_listed_in_legacy_sql_nulls(value: Any) -> None:
    # JSON values that are empty or falsy are still values: restoring them as SQL NULL would lose them.
    assert to_meta(FailedLookup(**FAILED_ROW, metadata=value))["legacy_sql_nulls"] == []
    assert to_meta(SkippedImport(**SKIPPED_ROW, criteria_failed=value))["legacy_sql_nulls"] == []


def test_meta_times_are_utc_iso_strings_at_the_columns_precision() -> None:
    # What the migration's SQL writes with to_char: whole seconds for timestamp(0), always six
    # fractional digits for timestamp; both end in Z.
    failed = to_meta(FailedLookup(**FAILED_ROW, last_retry_at=datetime(2025, 8, 5, 0, 0, 1)))
    assert (failed["legacy_inserted_at"], failed["legacy_updated_at"], failed["last_retry_at"]) == (
        "2025-08-04T07:30:00Z",
        "2025-08-04T07:30:00Z",
        "2025-08-05T00:00:01Z",
    )
    skipped = to_meta(
        SkippedImport(tmdb_id=1, inserted_at=datetime(2025, 8, 4), checked_at=datetime(2025, 8, 4, 0, 0, 0, 5))
    )
    assert (skipped["legacy_inserted_at"], skipped["checked_at"]) == (
        "2025-08-04T00:00:00.000000Z",
        "2025-08-04T00:00:00.000005Z",
    )


def test_new_fills_in_what_a_fresh_row_holds() -> None:
    failed = FailedLookup.new("tt1", "oscar_import", at=AWARE)
    assert (failed.reason, failed.retry_count, failed.last_retry_at, failed.metadata, failed.id) == (
        "no_tmdb_match",
        0,
        None,
        {},
        None,
    )
    skipped = SkippedImport.new(1, at=AWARE)
    assert (skipped.reason, skipped.criteria_failed, skipped.id) == ("quality_criteria", None, None)


def test_new_keeps_what_it_is_given() -> None:
    retried = FailedLookup.new(
        "tt1",
        "oscar_import",
        reason="tmdb_error",
        metadata={"attempt": 3},
        retry_count=3,
        last_retry_at=datetime(2025, 8, 4, 9, 45, 10, 999999, tzinfo=timezone(timedelta(hours=2))),
        at=AWARE,
    )
    assert (retried.reason, retried.retry_count, retried.metadata) == ("tmdb_error", 3, {"attempt": 3})
    # Converted to naive UTC and cut to the second, as the timestamp(0) column would hold it.
    assert retried.last_retry_at == datetime(2025, 8, 4, 7, 45, 10)
    soft = SkippedImport.new(1, title="Shawshank", reason="manual_review", criteria_failed=[], at=AWARE)
    assert (soft.title, soft.reason, soft.criteria_failed) == ("Shawshank", "manual_review", [])


FAILED_META = to_meta(FailedLookup(**FAILED_ROW, id=1))
SKIPPED_META = to_meta(SkippedImport(**SKIPPED_ROW, id=2))


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (
            {**FAILED_META, "legacy_inserted_at": 1754292600},
            "invalid meta: legacy_inserted_at: expected an ISO 8601 time string, got 1754292600",
        ),
        (
            {**FAILED_META, "legacy_updated_at": "yesterday"},
            "invalid meta: legacy_updated_at: not an ISO 8601 time: 'yesterday'",
        ),
        (
            {**FAILED_META, "last_retry_at": "2025-13-01T00:00:00Z"},
            "invalid meta: last_retry_at: not an ISO 8601 time: '2025-13-01T00:00:00Z'",
        ),
        (
            {**SKIPPED_META, "legacy_inserted_at": "now"},
            "invalid meta: legacy_inserted_at: not an ISO 8601 time: 'now'",
        ),
        ({**SKIPPED_META, "checked_at": 0}, "invalid meta: checked_at: expected an ISO 8601 time string, got 0"),
        (
            {**FAILED_META, "imdb_id": None},
            "invalid meta for a failed_imdb_lookups record: imdb_id: is missing",
        ),
        (
            {k: v for k, v in FAILED_META.items() if k not in ("source", "legacy_updated_at")},
            "invalid meta for a failed_imdb_lookups record: source: is missing; legacy_updated_at: is missing",
        ),
        (
            {**SKIPPED_META, "legacy_inserted_at": None},
            "invalid meta for a skipped_imports record: legacy_inserted_at: is missing",
        ),
        (
            {"import_type": "canonical", "tmdb_id": 278},
            "invalid meta: meta: holds neither a failed lookup (failure_reason) nor a soft import",
        ),
    ],
)
def test_meta_that_holds_no_valid_record_says_which_key_is_wrong(meta: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        from_meta(meta)
    assert str(info.value) == message


def test_meta_times_with_an_offset_or_without_a_zone_are_read_as_utc() -> None:
    failed = from_meta(
        {**FAILED_META, "legacy_inserted_at": "2025-08-04T09:30:00+02:00", "legacy_updated_at": "2025-08-04T07:30:00"}
    )
    assert isinstance(failed, FailedLookup)
    assert failed.inserted_at == failed.updated_at == datetime(2025, 8, 4, 7, 30)
    skipped = from_meta({**SKIPPED_META, "checked_at": "2025-08-04T02:30:00.000001-05:00"})
    assert isinstance(skipped, SkippedImport)
    assert skipped.checked_at == datetime(2025, 8, 4, 7, 30, 0, 1)
