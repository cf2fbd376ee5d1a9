"""Validation at the edge: every invalid job input is a ValidationError naming the field, before
the database (issue 15, items 6 and 9). Each case here was measured to reach PostgreSQL (or to
raise TypeError, AttributeError, OverflowError or UnicodeEncodeError) before it was checked."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cinegraph_oban import Job, Oban, Unique, ValidationError, WorkerRegistry, WorkerSpec
from cinegraph_oban.model import job as job_module
from cinegraph_oban.model.unique import MAX_PERIOD
from conftest import ObanDatabase

WORKER = "MyApp.Workers.Mailer"


def problems(build: Callable[[], object]) -> dict[str, str]:
    """The problems `build()` raises, by field; fails the test when it raises none."""
    with pytest.raises(ValidationError) as info:
        build()
    assert info.value.problems, "a ValidationError names at least one field"
    return {p.field: p.message for p in info.value.problems}


def new(**kwargs: Any) -> Callable[[], Job]:
    kwargs.setdefault("worker", WORKER)
    return lambda: Job.new(**kwargs)


# -- NUL characters: libpq cuts text at the first one ------------------------------------------


def test_a_registered_worker_name_with_a_nul_is_refused_by_the_spec() -> None:
    found = problems(lambda: WorkerSpec("Rel.Nul\x00Evil"))
    assert "NUL" in found["name"]


def test_a_registry_resolved_name_is_checked_again_by_job_new() -> None:
    # A spec that escaped its own check (built without __init__) still cannot reach the table.
    spec = object.__new__(WorkerSpec)
    for name, value in {"name": "Rel.Nul\x00Evil", "queue": None, "max_attempts": None, "priority": None}.items():
        object.__setattr__(spec, name, value)
    object.__setattr__(spec, "tags", ())
    object.__setattr__(spec, "unique", None)
    registry = WorkerRegistry([spec])
    assert "NUL" in problems(new(worker="Rel.Nul\x00Evil", registry=registry))["worker"]


def test_a_directly_built_job_with_a_nul_in_its_queue_is_refused_by_validated() -> None:
    job = Job(WORKER, {"n": 1}, queue="Rel.Nul\x00Evil")
    assert "NUL" in problems(job.validated)["queue"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"a": "x\x00"}, "args['a']"),
        ({"a\x00": 1}, "args"),
        ({"a": [{"b\x00": 1}]}, "args['a'][0]"),
        ({"a": {"b": ("ok", "x\x00")}}, "args['a']['b'][1]"),
    ],
)
def test_a_nul_anywhere_in_args_is_named(args: dict[str, Any], field: str) -> None:
    assert "NUL" in problems(new(args=args))[field]
    assert "NUL" in problems(new(meta=args))["meta" + field.removeprefix("args")]


# -- lone surrogates: not UTF-8, so not encodable for the wire ---------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"queue": "q\ud800"}, "queue"),
        ({"tags": ["ok", "t\udfff"]}, "tags[1]"),
        ({"worker": "MyApp.\ud800"}, "worker"),
        ({"args": {"a": "\ud800"}}, "args['a']"),
        ({"args": {"\ud800": 1}}, "args"),
        ({"meta": {"a": [{"\udfff": 1}]}}, "meta['a'][0]"),
        ({"meta": {"a": ["\udfff"]}}, "meta['a'][0]"),
    ],
)
def test_a_lone_surrogate_in_any_text_field_is_named(kwargs: dict[str, Any], field: str) -> None:
    assert "surrogate" in problems(new(**kwargs))[field]


def test_a_lone_surrogate_in_a_spec_is_refused() -> None:
    found = problems(lambda: WorkerSpec("MyApp.W\ud800", queue="q\ud800", tags=("\ud800",)))
    assert set(found) == {"name", "queue", "tags[0]"}


# -- keys JSON writes alike ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({1: "a", "1": "b"}, ""),
        ({True: "a", "true": "b"}, ""),
        ({None: "a", "null": "b"}, ""),
        ({1.5: "a", "1.5": "b"}, ""),
        ({"x": {"y": [{2: "a", "2": "b"}]}}, "['x']['y'][0]"),
    ],
)
def test_keys_that_collide_once_written_are_refused_at_any_depth(value: dict[Any, Any], field: str) -> None:
    assert "one value would be lost" in problems(new(args=value))["args" + field]
    assert "one value would be lost" in problems(new(meta=value))["meta" + field]


def test_mixed_keys_that_do_not_collide_are_written_as_strings() -> None:
    job = Job.new(WORKER, {1: "a", "b": {2: None, "3": 3}, None: 0, False: 1})  # type: ignore[dict-item]
    assert json.loads(job.args_json) == {"1": "a", "b": {"2": None, "3": 3}, "null": 0, "false": 1}


def test_the_encoding_keeps_the_key_order_given() -> None:
    # The unique lookup probes by the first key of an exact args match (statements._probe).
    assert Job.new(WORKER, {"v": 1, "n": 2, "a": {"z": 1, "b": 2}}).args_json == '{"v":1,"n":2,"a":{"z":1,"b":2}}'


def test_a_collision_deep_inside_is_found_even_near_the_recursion_limit() -> None:
    deep: dict[Any, Any] = {}
    inner = deep
    for _ in range(900):
        inner["a"] = {}
        inner = inner["a"]
    inner.update({1: "x", "1": "y"})
    found = problems(new(args=deep))
    assert any("one value would be lost" in message for message in found.values())


def test_the_key_walk_runs_only_for_objects_with_non_string_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # Job.new is on the hot path of bulk inserts: string keys alone need no walk of their own.
    def walked(*_: object) -> None:
        raise AssertionError("walked")

    monkeypatch.setattr(job_module, "_key_collision", walked)
    Job.new(WORKER, {"a": {"b": [{"c": 1}]}}, meta={"m": "x"})
    with pytest.raises(AssertionError, match="walked"):
        Job.new(WORKER, {"a": {1: "x", "y": 2}})


# -- values and keys JSON cannot hold -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "field", "fragment"),
    [
        ({"a": math.nan}, "args['a']", "not valid JSON"),
        ({"a": [1, {"b": -math.inf}]}, "args['a'][1]['b']", "not valid JSON"),
        ({math.nan: 1}, "args", "key nan is not valid JSON"),
        ({math.inf: 1}, "args", "key inf is not valid JSON"),
        ({(1, 2): 1}, "args", "a tuple"),
        ({"a": {1, 2}}, "args['a']", "set is not JSON-encodable"),
        ({"a": b"x"}, "args['a']", "bytes is not JSON-encodable"),
        ({"a": datetime(2030, 1, 1)}, "args['a']", "datetime is not JSON-encodable"),
        ({"a": 10**5000}, "args['a']", "digits"),
    ],
)
def test_what_json_cannot_hold_is_named(args: dict[Any, Any], field: str, fragment: str) -> None:
    assert fragment in problems(new(args=args))[field]


def test_a_value_nested_past_the_recursion_limit_is_a_validation_error() -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(5000):
        inner["a"] = {}
        inner = inner["a"]
    assert "nested too deeply" in problems(new(args=deep))["args"]


def test_args_and_meta_must_be_objects() -> None:
    assert "JSON object" in problems(new(args=[1, 2]))["args"]
    assert "JSON object" in problems(new(meta="x"))["meta"]


def test_any_mapping_is_written_as_the_object_it_holds() -> None:
    job = Job.new(WORKER, MappingProxyType({"a": MappingProxyType({"b": 1})}))
    assert json.loads(job.args_json) == {"a": {"b": 1}}


# -- types and ranges of the other options --------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tags": 5}, "tags"),
        ({"tags": "one,two"}, "tags"),
        ({"tags": [["nested"]]}, "tags[0]"),
        ({"tags": [b"bytes"]}, "tags[0]"),
        ({"registry": "x"}, "registry"),
        ({"queue": 5}, "queue"),
        ({"queue": ""}, "queue"),
        ({"queue": "q" * 128}, "queue"),
        ({"worker": 5}, "worker"),
        ({"worker": "MyApp." + "W" * 122}, "worker"),
        ({"priority": True}, "priority"),
        ({"priority": 10**30}, "priority"),
        ({"priority": 1.0}, "priority"),
        ({"max_attempts": False}, "max_attempts"),
        ({"max_attempts": 2**31}, "max_attempts"),
        ({"max_attempts": 10**30}, "max_attempts"),
        ({"state": []}, "state"),
        ({"state": "completed"}, "state"),
        ({"scheduled_at": "2030-01-01"}, "scheduled_at"),
        ({"schedule_in": "soon"}, "schedule_in"),
        ({"schedule_in": math.nan}, "schedule_in"),
        ({"schedule_in": math.inf}, "schedule_in"),
        ({"schedule_in": True}, "schedule_in"),
        ({"unique": "yes"}, "unique"),
        ({"unique": True, "replace": 5}, "replace"),
    ],
)
def test_each_invalid_option_is_named(kwargs: dict[str, Any], field: str) -> None:
    assert field in problems(new(**kwargs))


def test_a_worker_name_of_127_characters_is_the_longest() -> None:
    longest = "MyApp." + "W" * 121
    assert Job.new(longest).worker == longest
    assert Job.new(WORKER, queue="q" * 127).queue == "q" * 127


@pytest.mark.parametrize("delay", [1e20, -1e20, 10**400, timedelta.max, timedelta.min, timedelta(days=3_000_000)])
def test_a_delay_past_the_calendar_is_a_validation_error(delay: float | timedelta) -> None:
    assert "1..9999" in problems(new(schedule_in=delay))["schedule_in"]


@pytest.mark.parametrize(
    "when",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_an_aware_time_that_leaves_the_calendar_in_utc_is_a_validation_error(when: datetime) -> None:
    assert "1..9999" in problems(new(scheduled_at=when))["scheduled_at"]


def test_the_calendar_edges_themselves_are_accepted() -> None:
    assert Job.new(WORKER, scheduled_at=datetime(1, 1, 1)).scheduled_at == datetime(1, 1, 1)
    assert Job.new(WORKER, scheduled_at=datetime.max).scheduled_at == datetime.max


def test_a_huge_bad_value_is_not_repeated_in_full_in_the_message() -> None:
    with pytest.raises(ValidationError) as info:
        Job.new(WORKER, schedule_in=10**400)
    assert len(str(info.value)) < 300


# -- unique periods and options --------------------------------------------------------------


def test_a_period_beyond_a_hundred_years_is_refused_with_infinity_suggested() -> None:
    for unique in ({"period": 10**12}, Unique(period=10**12), {"period": (10**8, "weeks")}):
        message = problems(new(unique=unique))["unique.period"]
        assert "hundred years" in message and "'infinity'" in message
    assert Job.new(WORKER, unique={"period": MAX_PERIOD}).unique.period == MAX_PERIOD  # type: ignore[union-attr]
    assert Job.new(WORKER, unique={"period": "infinity"}).unique.period == "infinity"  # type: ignore[union-attr]


def test_unique_options_given_as_lists_are_the_tuples_they_mean() -> None:
    unique = Unique(fields=["args", "worker"], keys=["id"], states=["available"])  # type: ignore[arg-type]
    assert unique == Unique(fields=("args", "worker"), keys=("id",), states=("available",))
    hash(unique)  # the lookup's SQL is cached by it


@pytest.mark.parametrize(
    ("unique", "field"),
    [
        (Unique(fields="args"), "unique.fields"),  # type: ignore[arg-type]
        (Unique(keys=(1,)), "unique.keys[0]"),  # type: ignore[arg-type]
        (Unique(keys=("ok", "k\x00")), "unique.keys[1]"),
        (Unique(keys=("\ud800",)), "unique.keys[0]"),
        (Unique(period=1.5), "unique.period"),  # type: ignore[arg-type]
        (Unique(period=True), "unique.period"),
    ],
)
def test_invalid_unique_options_are_named(unique: Unique, field: str) -> None:
    assert field in problems(new(unique=unique))


# -- WorkerSpec and WorkerRegistry ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "MyApp." + "W" * 122}, "name"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"queue": "q" * 128}, "queue"),
        ({"queue": ""}, "queue"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2**31}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"priority": 10}, "priority"),
        ({"priority": "1"}, "priority"),
        ({"tags": "abc"}, "tags"),
        ({"tags": (1,)}, "tags[0]"),
        ({"unique": {"period": 10**12}}, "unique.period"),
        ({"unique": "yes"}, "unique"),
    ],
)
def test_a_spec_no_job_could_be_stored_with_is_refused(kwargs: dict[str, Any], field: str) -> None:
    kwargs.setdefault("name", WORKER)
    assert field in problems(lambda: WorkerSpec(**kwargs))


def test_a_spec_reports_every_problem_at_once() -> None:
    found = problems(lambda: WorkerSpec("", queue="", max_attempts=0, priority=-1, tags=("\x00",)))
    assert set(found) == {"name", "queue", "max_attempts", "priority", "tags[0]"}


def test_a_spec_is_stored_as_oban_stores_it() -> None:
    spec = WorkerSpec("Elixir.MyApp.Mailer", tags=["Mail"], unique={"period": 30})  # type: ignore[arg-type]
    assert (spec.name, spec.tags, spec.unique) == ("MyApp.Mailer", ("Mail",), Unique(period=30))
    assert Job.new("Mailer", registry=WorkerRegistry([spec])).worker == "MyApp.Mailer"
    assert WorkerSpec(WORKER, unique=False).unique is None  # type: ignore[arg-type]


def test_a_spec_name_of_128_characters_would_fail_the_check_constraint() -> None:
    assert "1..127" in problems(lambda: WorkerSpec("MyApp." + "W" * 122))["name"]
    assert WorkerSpec("MyApp." + "W" * 121).name == "MyApp." + "W" * 121


def test_registering_something_other_than_a_spec_is_a_validation_error() -> None:
    assert "WorkerSpec" in problems(lambda: WorkerRegistry().register("MyApp.W"))["spec"]  # type: ignore[arg-type]


# -- Job.validated(): jobs built without Job.new ------------------------------------------------


def test_a_valid_direct_job_passes_validated_and_equals_the_job_new_one() -> None:
    direct = Job(
        WORKER,
        {"a": 1, "b": [1, 2]},
        queue="mail",
        meta={"m": "x"},
        tags=("Tag", " tag "),
        priority=2,
        max_attempts=3,
        state="scheduled",
        scheduled_at=datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
        unique=Unique(period=30),
        replace=(("scheduled", ("scheduled_at",)),),
    )
    built = Job.new(
        WORKER,
        {"a": 1, "b": [1, 2]},
        queue="mail",
        meta={"m": "x"},
        tags=["tag"],
        priority=2,
        max_attempts=3,
        scheduled_at=datetime(2030, 1, 1, 10),
        unique={"period": 30},
        replace={"scheduled": ["scheduled_at"]},
    )
    checked = direct.validated()
    assert checked == built
    assert (checked.args_json, checked.meta_json) == (built.args_json, built.meta_json)
    assert checked.validated() is checked


def test_a_job_new_job_and_a_read_back_job_are_their_own_validated_selves() -> None:
    job = Job.new(WORKER, {"a": 1})
    assert job.validated() is job
    row = {
        "id": 7,
        "state": "completed",
        "queue": "default",
        "worker": WORKER,
        "args": {"a": 1},
        "meta": {},
        "tags": [],
        "priority": 0,
        "max_attempts": 20,
        "attempt": 1,
        "scheduled_at": datetime(2030, 1, 1),
        "inserted_at": datetime(2030, 1, 1),
        "errors": [],
    }
    read = Job.from_row(row)
    assert read.validated() is read
    stored = job.stored(1, datetime(2030, 1, 1), datetime(2030, 1, 1))
    assert stored.validated() is stored


def test_validated_keeps_the_fields_job_new_does_not_take() -> None:
    when = datetime(2030, 1, 1)
    direct = Job(WORKER, id=9, attempt=2, inserted_at=when, errors=({"attempt": 1},), conflict=True)
    checked = direct.validated()
    assert (checked.id, checked.attempt, checked.inserted_at, checked.errors, checked.conflict) == (
        9,
        2,
        when,
        ({"attempt": 1},),
        True,
    )


def test_a_job_changed_with_dataclasses_replace_is_checked_and_re_encoded() -> None:
    job = Job.new(WORKER, {"a": 1})
    assert "NUL" in problems(dataclasses.replace(job, queue="q\x00").validated)["queue"]
    assert "one value would be lost" in problems(dataclasses.replace(job, args={1: "a", "1": "b"}).validated)["args"]  # type: ignore[dict-item]
    changed = dataclasses.replace(job, args={"b": 2}).validated()
    assert json.loads(changed.args_json) == {"b": 2}  # not the {"a": 1} the copied args_json held


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"worker": "Mailer"}, "worker"),  # bare: no registry resolves it here
        ({"worker": 5}, "worker"),
        ({"args": {1: "a", "1": "b"}}, "args"),
        ({"meta": {"x": math.nan}}, "meta['x']"),
        ({"tags": "abc"}, "tags"),
        ({"tags": ("\ud800",)}, "tags[0]"),
        ({"priority": 10}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"state": "completed"}, "state"),
        ({"state": "available", "scheduled_at": datetime(2030, 1, 1)}, "state"),
        ({"scheduled_at": "tomorrow"}, "scheduled_at"),
        ({"unique": Unique(period=10**12)}, "unique.period"),
        ({"replace": (("scheduled", ("scheduled_at",)),)}, "replace"),  # replace without unique
    ],
)
def test_validated_refuses_what_job_new_refuses(kwargs: dict[str, Any], field: str) -> None:
    kwargs.setdefault("worker", WORKER)
    job = Job(**kwargs)
    assert field in problems(job.validated)


# -- hypothesis: text PostgreSQL refuses, and what is accepted round-trips ----------------------

_fine_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6)  # type: ignore[arg-type]
_refused_text = st.tuples(
    _fine_text, st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff"]), _fine_text
).map("".join)


@given(bad=_refused_text, where=st.sampled_from(["queue", "tag", "worker", "value", "key", "nested key", "nested"]))
def test_any_text_with_a_nul_or_a_lone_surrogate_is_refused(bad: str, where: str) -> None:
    cases: dict[str, dict[str, Any]] = {
        "queue": {"queue": bad},
        "tag": {"tags": ["ok", bad]},
        "worker": {"worker": f"MyApp.{bad}"},
        "value": {"args": {"a": bad}},
        "key": {"meta": {bad: 1}},
        "nested key": {"args": {"a": [{"b": {bad: None}}]}},
        "nested": {"meta": {"a": [1, [bad]]}},
    }
    kwargs = cases[where]
    field = {"queue": "queue", "tag": "tags[1]", "worker": "worker"}.get(where, next(iter(kwargs)))
    found = problems(new(**kwargs))
    assert any(name.startswith(field) for name in found)
    direct = {"tags": ("ok", bad)} if where == "tag" else kwargs
    assert any(name.startswith(field) for name in problems(Job(**{"worker": WORKER, **direct}).validated))


def _as_json_writes(value: Any) -> Any:
    """What JSON makes of a value: keys as strings, tuples as lists."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else json.dumps(k): _as_json_writes(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_json_writes(v) for v in value]
    return value


def _key_count(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_key_count(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_key_count(v) for v in value)
    return 0


_any_keys = st.one_of(st.text(max_size=3), st.integers(-3, 3), st.booleans(), st.none(), st.sampled_from([1.5, -0.0]))
_any_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4))
_any_values = st.recursive(
    _any_scalars,
    lambda kids: st.lists(kids, max_size=3) | st.tuples(kids) | st.dictionaries(_any_keys, kids, max_size=3),
    max_leaves=12,
)


@given(args=st.dictionaries(_any_keys, _any_values, max_size=4))
def test_any_accepted_args_round_trip_through_json_with_no_value_lost(args: dict[Any, Any]) -> None:
    try:
        job = Job.new(WORKER, args)
    except ValidationError as error:
        assert all(p.field.startswith("args") for p in error.problems)
        return
    loaded = json.loads(job.args_json)
    assert loaded == _as_json_writes(args)
    assert _key_count(loaded) == _key_count(args)  # no two keys were written alike


# -- through the client: refused before the database, accepted ones stored as given ----------


def test_insert_refuses_a_directly_built_invalid_job_before_the_database(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    with pytest.raises(ValidationError) as info:
        client.insert(Job(WORKER, {"n": 1}, queue="Rel.Nul\x00Evil"))
    assert "queue" in {p.field for p in info.value.problems}
    with pytest.raises(ValidationError):
        client.insert_all([Job.new(WORKER, {"n": 1}), Job(WORKER, {1: "a", "1": "b"})])  # type: ignore[dict-item]
    with pytest.raises(ValidationError):
        client.insert(Job(WORKER, tags=("\ud800",)))
    assert oban.count() == 0


def test_insert_stores_a_valid_directly_built_job_with_its_args(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    job = client.insert(Job(WORKER, {"b": 2, "a": {"y": 1, "x": [1, "é"]}}, queue="mail", tags=("T",)))
    [row] = oban.rows()
    assert (row["args"], row["queue"], row["tags"], row["worker"]) == (
        {"b": 2, "a": {"y": 1, "x": [1, "é"]}},
        "mail",
        ["t"],
        WORKER,
    )
    assert job.id == row["id"]
    mixed = client.insert(Job.new(WORKER, {1: "a", "b": MappingProxyType({2: None})}))  # type: ignore[dict-item]
    assert oban.rows(f"id = {mixed.id}")[0]["args"] == {"1": "a", "b": {"2": None}}


def test_the_longest_unique_period_is_one_postgresql_can_subtract(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    first = client.insert(Job.new(WORKER, {"n": 1}, unique={"period": MAX_PERIOD}))
    again = client.insert(Job.new(WORKER, {"n": 1}, unique={"period": MAX_PERIOD}))
    assert (first.conflict, again.conflict, again.id) == (False, True, first.id)
