"""Hypothesis strategies for legacy rows, job meta and job populations, shaped by the real columns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import strategies as st

from cinegraph_oban.meta.records import INT4_MAX, INT4_MIN, FailedLookup, SkippedImport

# Text PostgreSQL accepts: any Unicode scalar value except NUL (surrogates are not valid UTF-8).
PG_CHARS = _CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
# Text that likes the awkward cases: quotes, backslashes, JSON-looking text, multi-byte letters.
_TRICKY = st.sampled_from(["'", '"', "\\", "\\u0000", "{}", "é", "ß", "日本", "🎬", " ", "", "null", "--", ";"])


def varchar255() -> st.SearchStrategy[str]:
    """varchar(255): up to 255 characters (not bytes), multi-byte included."""
    return st.one_of(
        st.text(_CHARS, max_size=255),
        st.lists(_TRICKY, max_size=12).map("".join),
        st.text(_CHARS, min_size=255, max_size=255),
    )


def int4() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(INT4_MIN, INT4_MAX), st.sampled_from([INT4_MIN, INT4_MAX, 0, -1]))


def seconds() -> st.SearchStrategy[datetime]:
    """timestamp(0): whole seconds."""
    return st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)).map(
        lambda d: d.replace(microsecond=0)
    )


def microseconds() -> st.SearchStrategy[datetime]:
    """timestamp: microseconds."""
    return st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31))


_JSON_NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, -0.0, 0.0, 1e308, 5e-324, 2**63, -(2**63) - 1]),
)
_JSON_SCALARS = st.one_of(st.none(), st.booleans(), _JSON_NUMBERS, st.text(_CHARS, max_size=20), _TRICKY)
_JSON_KEYS = st.one_of(st.text(_CHARS, max_size=10), _TRICKY)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Nested JSON: arrays, objects with unicode keys, numbers PostgreSQL normalises."""
    return st.recursive(
        _JSON_SCALARS,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(_JSON_KEYS, children, max_size=4),
        max_leaves=max_leaves,
    )


def json_objects(max_leaves: int = 12) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(_JSON_KEYS, json_values(max_leaves), max_size=5)


def criteria_maps() -> st.SearchStrategy[Any]:
    """criteria_failed as the worker wrote it (an analysis map), anything JSON, or NULL."""
    analysis = st.fixed_dictionaries(
        {
            "tmdb_id": int4(),
            "title": st.text(_CHARS, max_size=40),
            "failed_criteria": st.lists(st.sampled_from(["votes", "popularity", "poster", "release_date"]), max_size=4),
            "missing_data": st.fixed_dictionaries(
                {k: st.booleans() for k in ("poster", "votes", "popularity", "release_date")}
            ),
        }
    )
    return st.one_of(st.none(), analysis, json_values())


def failed_lookups(with_id: bool = True) -> st.SearchStrategy[FailedLookup]:
    return st.builds(
        FailedLookup,
        id=st.integers(1, 2**62) if with_id else st.none(),
        imdb_id=varchar255(),
        title=st.none() | varchar255(),
        year=st.none() | int4(),
        source=varchar255(),
        source_key=st.none() | varchar255(),
        reason=varchar255(),
        metadata=st.none() | json_values(),
        retry_count=st.none() | int4(),
        last_retry_at=st.none() | seconds(),
        inserted_at=seconds(),
        updated_at=seconds(),
    )


def skipped_imports(with_id: bool = True) -> st.SearchStrategy[SkippedImport]:
    return st.builds(
        SkippedImport,
        id=st.integers(1, 2**62) if with_id else st.none(),
        tmdb_id=int4(),
        title=st.none() | varchar255(),
        reason=st.none() | varchar255(),
        criteria_failed=criteria_maps(),
        checked_at=st.none() | microseconds(),
        inserted_at=microseconds(),
    )


def records() -> st.SearchStrategy[FailedLookup | SkippedImport]:
    return st.one_of(failed_lookups(), skipped_imports())


def enqueue_meta() -> st.SearchStrategy[dict[str, Any]]:
    """Meta given at enqueue time: the keys Cinegraph uses, plus anything else."""
    known = st.fixed_dictionaries(
        {},
        optional={
            "import_type": st.sampled_from(["canonical", "soft", "full", "bulk"]),
            "source_list": st.sampled_from(["1001_movies", "criterion", "sight_and_sound"]),
        },
    )
    return st.builds(lambda a, b: {**b, **a}, known, json_objects(6))
