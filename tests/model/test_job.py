"""Job.new validates and normalises like Oban.Job.new/2 (pure: no database needed)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cinegraph_oban import Job, Unique, ValidationError, WorkerRegistry, WorkerSpec
from cinegraph_oban.model.timestamps import utc_now
from tests.helpers import TMDB


def problems_of(**kwargs: object) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        Job.new(**kwargs)  # type: ignore[arg-type]
    return {p.field: p.message for p in info.value.problems}


def test_defaults_are_obans() -> None:
    job = Job.new("MyApp.Workers.Mailer", {"id": 1})
    assert (job.queue, job.priority, job.max_attempts, job.state, job.tags, job.meta) == (
        "default",
        0,
        20,
        "available",
        (),
        {},
    )
    assert job.scheduled_at is None and job.unique is None
    assert json.loads(job.args_json) == {"id": 1}


def test_registered_worker_options_apply_when_the_job_does_not_set_them() -> None:
    job = Job.new(TMDB, {"tmdb_id": 1})
    assert (job.queue, job.max_attempts) == ("tmdb", 5)
    assert job.unique == Unique(fields=("args",), keys=("tmdb_id", "imdb_id", "source_key"), period=300)
    own = Job.new(TMDB, {"tmdb_id": 1}, queue="slow", max_attempts=2, unique=False)
    assert (own.queue, own.max_attempts, own.unique) == ("slow", 2, None)


def test_elixir_prefix_is_stripped_and_bare_names_resolve_through_the_registry() -> None:
    assert Job.new("Elixir." + TMDB).worker == TMDB
    assert Job.new("TMDbDetailsWorker").worker == TMDB


def test_bare_unregistered_module_name_is_rejected_with_the_reason() -> None:
    message = problems_of(worker="MailerWorker")["worker"]
    assert "bare module name" in message and "unknown worker: MailerWorker" in message


def test_custom_registry() -> None:
    registry = WorkerRegistry([WorkerSpec("MyApp.Mailer", queue="mail", priority=2, tags=("Mail",))])
    job = Job.new("Mailer", registry=registry)
    assert (job.worker, job.queue, job.priority, job.tags) == ("MyApp.Mailer", "mail", 2, ("mail",))


def test_all_problems_are_reported_at_once() -> None:
    found = problems_of(
        worker="",
        args=[1, 2],
        meta={"x": math.nan},
        queue="q" * 128,
        priority=10,
        max_attempts=0,
        tags=["ok", 3],
    )
    assert set(found) == {"worker", "args", "meta['x']", "queue", "priority", "max_attempts", "tags[1]"}
    assert "1..127" in found["queue"]


@pytest.mark.parametrize(
    ("args", "field", "fragment"),
    [
        ({"a": "x\x00y"}, "args['a']", "NUL"),
        ({"a": float("inf")}, "args['a']", "not valid JSON"),
        ({"a": {"b": [1, object()]}}, "args['a']['b'][1]", "not JSON-encodable"),
        ({"a": "\ud800"}, "args['a']", "surrogate"),
        ({"k\x00": 1}, "args", "NUL"),
    ],
)
def test_json_problems_name_the_place(args: dict[object, object], field: str, fragment: str) -> None:
    found = problems_of(worker=TMDB, args=args)
    assert fragment in found[field]


def test_non_string_keys_become_strings_as_jason_encodes_them() -> None:
    assert json.loads(Job.new(TMDB, {1: "a", "b": {2: None}}, unique=False).args_json) == {"1": "a", "b": {"2": None}}


def test_a_literal_backslash_u0000_is_not_mistaken_for_nul() -> None:
    # Found by hypothesis: the text \u0000 (six characters) is fine, only a real NUL is not.
    job = Job.new(TMDB, {"\\u0000": "\\\\u0000"}, meta={"\\u0000": None}, unique=False)
    assert json.loads(job.args_json) == {"\\u0000": "\\\\u0000"}


def test_tags_are_normalised_like_oban() -> None:
    assert Job.new(TMDB, tags=[" Canonical ", "canonical", "", "  ", "1001_Movies"]).tags == (
        "canonical",
        "1001_movies",
    )


def test_aware_times_become_naive_utc_and_naive_ones_are_utc() -> None:
    aware = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    job = Job.new(TMDB, scheduled_at=aware)
    assert job.scheduled_at == datetime(2030, 1, 1, 6, 30)
    assert job.state == "scheduled"
    assert Job.new(TMDB, scheduled_at=datetime(2030, 1, 1)).scheduled_at == datetime(2030, 1, 1)


def test_schedule_in_seconds_or_timedelta() -> None:
    before = utc_now()
    job = Job.new(TMDB, schedule_in=60)
    assert job.state == "scheduled" and job.scheduled_at is not None
    assert timedelta(seconds=59) < job.scheduled_at - before < timedelta(seconds=61)
    assert Job.new(TMDB, schedule_in=timedelta(minutes=5)).scheduled_at > before + timedelta(minutes=4)  # type: ignore[operator]
    assert "not both" in problems_of(worker=TMDB, schedule_in=1, scheduled_at=datetime.now(UTC))["schedule_in"]


def test_available_with_a_time_is_refused_because_it_would_run_at_once() -> None:
    assert "runs at once" in problems_of(worker=TMDB, state="available", schedule_in=10)["state"]
    assert Job.new(TMDB, state="suspended").state == "suspended"
    assert "state" in problems_of(worker=TMDB, state="completed")


def test_unique_defaults_and_validation() -> None:
    # Oban's `unique: true` is its defaults with no time limit; the states are the inserting
    # client's Oban version's defaults (2.22's list unless oban_version="2.23").
    job = Job.new("MyApp.W", unique=True)
    assert job.unique == Unique(("args", "queue", "worker"), (), "infinity", None, "inserted_at")
    assert job.unique.states_for("2.22") == ("scheduled", "available", "executing", "retryable", "completed")
    assert job.unique.states_for("2.23") == (
        "suspended",
        "available",
        "scheduled",
        "executing",
        "retryable",
        "completed",
    )
    assert job.unique.states_for("2.23.0") == job.unique.states_for("2.22")  # suspended came in 2.23.1
    assert job.unique.states_for("2.23.1") == job.unique.states_for("2.23")
    from cinegraph_oban.model.unique import check_oban_version

    assert check_oban_version("2.23.01") == "2.23.1"
    for wrong in ("2.24", "2.16", "3.0", "2", "2.x", 2.22):
        with pytest.raises(ValidationError, match="oban_version"):
            check_oban_version(wrong)
    assert Job.new("MyApp.W", unique={}).unique == Unique(period=60)
    assert Job.new("MyApp.W", unique={"states": "incomplete"}).unique.states == (  # type: ignore[union-attr]
        "suspended",
        "available",
        "scheduled",
        "executing",
        "retryable",
    )
    assert "unique.states" in problems_of(worker="MyApp.W", unique={"states": "finished"})
    assert Job.new("MyApp.W", unique={"period": (5, "minutes")}).unique.period == 300  # type: ignore[union-attr]
    assert Job.new("MyApp.W", unique={"period": "infinity"}).unique.period == "infinity"  # type: ignore[union-attr]
    found = problems_of(
        worker="MyApp.W", unique={"fields": ["nope"], "period": -1, "states": ["gone"], "timestamp": "x", "extra": 1}
    )
    assert set(found) == {"unique", "unique.fields", "unique.period", "unique.states", "unique.timestamp"}


def test_replace_list_applies_to_every_state_and_needs_unique() -> None:
    job = Job.new("MyApp.W", unique=True, replace=["args", "scheduled_at"])
    assert job.replace is not None and len(job.replace) == 8
    assert "only applies to unique" in problems_of(worker="MyApp.W", replace=["args"])["replace"]
    assert "invalid fields" in problems_of(worker="MyApp.W", unique=True, replace={"scheduled": ["state"]})["replace"]


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
)
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.text(max_size=8).filter(lambda k: "\x00" not in k), kids, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=8).filter(lambda k: "\x00" not in k), json_values, max_size=5)


@given(args=json_objects, meta=json_objects, priority=st.integers(0, 9), max_attempts=st.integers(1, 100))
def test_any_valid_job_encodes_exactly_its_args_and_meta(
    args: dict[str, object], meta: dict[str, object], priority: int, max_attempts: int
) -> None:
    job = Job.new(TMDB, args, meta=meta, priority=priority, max_attempts=max_attempts)
    assert json.loads(job.args_json) == args
    assert json.loads(job.meta_json) == meta
    assert job.attempt < job.max_attempts


@given(
    bad=st.sampled_from(
        [
            {"priority": -1},
            {"priority": 10},
            {"max_attempts": 0},
            {"queue": ""},
            {"worker": "lowercase.module"},
            {"args": {"x": float("nan")}},
            {"meta": {"x": "\x00"}},
            {"tags": "not-a-list"},
            {"schedule_in": "soon"},
            {"unique": {"period": 0}},
        ]
    ),
    extra=st.integers(0, 5),
)
def test_any_invalid_job_raises_validation_error(bad: dict[str, object], extra: int) -> None:
    kwargs: dict[str, object] = {"worker": TMDB, "args": {"n": extra}, **bad}
    with pytest.raises(ValidationError) as info:
        Job.new(**kwargs)  # type: ignore[arg-type]
    assert info.value.problems


def test_the_reused_json_encoder_writes_what_json_dumps_writes() -> None:
    from cinegraph_oban.model import job as job_module

    values = [
        {"a": 1, "b": [1.5, -0.0, 1e100, None, True], "c": {"d": 'ünïcode ✓ " \\ \n'}},
        {1: "int key", "s": "x"},
        {"big": 2**70, "nested": [[{"x": []}]]},
    ]
    for value in values:
        expected = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        assert job_module._encode(value) == expected
    for bad in ({"x": float("nan")}, {"x": object()}):
        text, problems = job_module.encode_json_object(bad, "args")
        assert text is None and problems


def test_stored_copies_every_field() -> None:
    import dataclasses
    import inspect

    from cinegraph_oban.model import job as job_module

    job = Job.new(TMDB, {"imdb_id": "tt1"}, meta={"m": 1}, tags=["x"], priority=2, schedule_in=5, replace=["priority"])
    later = datetime(2030, 1, 1)
    stored = job.stored(7, later, later)
    assert stored == dataclasses.replace(job, id=7, inserted_at=later, scheduled_at=later, unique=None, replace=None)
    assert (stored.args_json, stored.meta_json) == (job.args_json, job.meta_json)
    # stored() sets each field by name: a field added to Job must be added there too.
    source = inspect.getsource(job_module.Job.stored)
    assert [f.name for f in dataclasses.fields(Job) if f'_set(new, "{f.name}",' not in source] == []


def test_a_value_that_holds_itself_is_named_not_walked_forever() -> None:
    looped: dict[str, object] = {"x": 1}
    looped["self"] = looped
    with pytest.raises(ValidationError, match=r"args\['self'\]: refers to itself"):
        Job.new("MyApp.W", looped)
    shared = {"n": float("nan")}
    with pytest.raises(ValidationError, match=r"args\['q'\]\['n'\]: nan is not valid JSON"):
        Job.new("MyApp.W", {"p": shared, "q": shared})
