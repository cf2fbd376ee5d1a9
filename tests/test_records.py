"""The meta contract: records, their meta form, and the merge (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given

from cinegraph_oban import FailedLookup, SkippedImport, ValidationError, from_meta, merge_meta, to_meta
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
