"""The Oban job as a value: construction and validation as `Oban.Job.new/2` does it.

A `Job` made by `Job.new` is ready to insert: its worker is a stored module name (no `Elixir.`
prefix), its options are merged with the worker's own (from the registry), its tags are
normalised as Oban normalises them, its times are naive UTC, and its `args` and `meta` have been
encoded to JSON once. That encoding is what gets written: a Job is a snapshot, so changing the
dict passed as `args` afterwards does not change the job.

Rows read back from the database become `Job`s too (`Job.from_row`), with `id`, `attempt`,
timestamps and `conflict` (True when a unique insert found an existing job).
"""

from __future__ import annotations

import contextlib
import json
import json.encoder
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cinegraph_oban.errors import Problem, ValidationError
from cinegraph_oban.model.timestamps import to_naive_utc, utc_now
from cinegraph_oban.model.unique import JOB_STATES, REPLACEABLE_FIELDS, Unique
from cinegraph_oban.model.workers import (
    DEFAULT_REGISTRY,
    MAX_INT4,
    WorkerRegistry,
    WorkerSpec,
    name_problems,
    short_repr,
    text_problem,
)

__all__ = ["Job", "encode_json_object", "normalize_tags"]

INSERTABLE_STATES = ("available", "scheduled", "suspended")
_MODULE_SEGMENT = re.compile(r"[A-Z][A-Za-z0-9_]*\Z")
# A NUL character as JSON writes it: \u0000 after an even number of backslashes (a literal
# backslash followed by "u0000" is written \\u0000 and is fine).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _plain(value: Any) -> Any:
    """What the encoder writes for a value it does not know: a Mapping that is not a dict (a
    `MappingProxyType`, a read-only view) as the dict it holds; anything else is refused."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-encodable")


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_plain)
# The C encoder that _ENCODER.encode builds anew on every call, built once. No circular check:
# a cycle ends in RecursionError, and _locate_json_problem then names where the cycle closes.
_C_ENCODE: Any = None
with contextlib.suppress(AttributeError, TypeError):  # an interpreter without the C accelerator
    _C_ENCODE = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _plain, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
_JSON_ERRORS = (TypeError, ValueError, UnicodeEncodeError, RecursionError)


def _encode(value: Any) -> str:
    if _C_ENCODE is None:  # pragma: no cover
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def encode_json_object(value: Any, name: str) -> tuple[str | None, list[Problem]]:
    """Encode a JSON object the way PostgreSQL's jsonb will accept it, or say why not.

    Objects only (Oban's args and meta are maps), no NaN or Infinity, no NUL characters and no
    lone surrogates (jsonb rejects both), anywhere, keys included. Non-string keys become
    strings, as Jason encodes an Elixir map's atom or integer keys; two keys of one object that
    would be written alike (`1` and `"1"`) are refused, since jsonb would keep only one value.
    """
    if not isinstance(value, dict):
        if not isinstance(value, Mapping):
            return None, [Problem(name, f"must be a JSON object (a dict), got {type(value).__name__}")]
        value = dict(value)
    if not value:
        return "{}", []
    try:
        text = _encode(value)
    except _JSON_ERRORS:
        return None, [_locate_json_problem(value, name)]
    if not text.isascii() and not _utf8(text):
        return None, [_locate_json_problem(value, name)]
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        return None, [_locate_json_problem(value, name)]
    if _other_keys_within(value):
        collision = _key_collision(value, name)
        if collision is not None:
            return None, [collision]
    return text, []


_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})


def _other_keys_within(value: Mapping[Any, Any]) -> bool:
    """True when an object in `value` (which encoded) has a key that is not a string, the only
    objects whose keys can collide once written. Kept to plain loops: it runs for every job,
    and most jobs have string keys alone, which need no walk that builds paths."""
    try:
        return _other_keys(value)
    except RecursionError:  # two frames a level here, one in the encoder: walk the slow way
        return True


def _other_keys(value: Mapping[Any, Any]) -> bool:
    for key in value:
        if type(key) is not str and not isinstance(key, str):
            return True
    return _other_keys_in(value.values())


def _other_keys_in(items: Iterable[Any]) -> bool:
    """`_other_keys` for each object in `items` (an object's values, a list), at any depth."""
    for item in items:
        kind = type(item)
        if kind in _SCALAR_TYPES:
            continue
        if kind is dict or isinstance(item, Mapping):
            if _other_keys(item):
                return True
        elif isinstance(item, list | tuple) and _other_keys_in(item):
            return True
    return False


def _key_collision(value: Mapping[Any, Any], path: str) -> Problem | None:
    """Two keys of one object that JSON writes alike (`1` and `"1"`, `True` and `"true"`): jsonb
    would keep one value and drop the other while the Job held both."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, Mapping):
            mixed = False
            for key, sub in item.items():
                if type(key) is not str:
                    mixed = True
                if isinstance(sub, Mapping | list | tuple):
                    stack.append((sub, f"{where}[{key!r}]"))
            if mixed:
                seen: dict[str, Any] = {}
                for key in item:
                    written = key if isinstance(key, str) else _encode({key: 0})[2:-4]
                    if written in seen:
                        return Problem(
                            where,
                            f"keys {short_repr(seen[written])} and {short_repr(key)} are both written "
                            f"{short_repr(written)} in JSON, and one value would be lost; keep one of them",
                        )
                    seen[written] = key
        elif isinstance(item, list | tuple):
            stack.extend(
                (sub, f"{where}[{i}]") for i, sub in enumerate(item) if isinstance(sub, Mapping | list | tuple)
            )
    return None


def _text_problem(text: str, what: str) -> str | None:
    """Why PostgreSQL would refuse `text` (a NUL, a lone surrogate), or None."""
    if "\x00" in text:
        return f"{what} a NUL character, which PostgreSQL's jsonb rejects; remove it"
    if not _utf8(text):
        return f"{what} a lone surrogate, which is not valid UTF-8; remove it or pair it"
    return None


def _number_problem(number: Any, what: str) -> str | None:
    """Why JSON cannot hold `number` (NaN, an infinity, an int too long to write), or None;
    `what` is how the message names it ("" for a value, "key " for a key)."""
    if isinstance(number, float) and not math.isfinite(number):
        return f"{what}{number!r} is not valid JSON; use null or a string"
    if isinstance(number, int) and not isinstance(number, bool):
        try:
            str(number)
        except ValueError:
            return (
                f"{what}an integer of over {sys.get_int_max_str_digits()} digits is more than Python "
                "writes as text; pass it as a string"
            )
    return None


_KEY_TYPES = (str, int, float, type(None))


def _locate_json_problem(value: Any, path: str) -> Problem:
    """Walk a value that failed to encode and name the first offending place."""
    # Each entry carries the ids of the containers above it, so a container that holds itself
    # (a cycle) is named instead of walked forever; one reached twice by two paths is fine.
    stack: list[tuple[Any, str, frozenset[int]]] = [(value, path, frozenset())]
    while stack:
        item, where, above = stack.pop()
        if isinstance(item, Mapping | list | tuple):
            if id(item) in above:
                return Problem(where, "refers to itself (a cycle), which JSON cannot hold")
            above = above | {id(item)}
        if isinstance(item, Mapping):
            for key, sub in item.items():
                if not isinstance(key, _KEY_TYPES):
                    return Problem(
                        where,
                        f"key {short_repr(key)} is a {type(key).__name__}: JSON object keys are strings "
                        "(ints, floats, booleans and None are written as strings); use a string",
                    )
                found = (
                    _text_problem(key, f"key {short_repr(key)} contains")
                    if isinstance(key, str)
                    else _number_problem(key, "key ")
                )
                if found:
                    return Problem(where, found)
                stack.append((sub, f"{where}[{key!r}]", above))
        elif isinstance(item, list | tuple):
            stack.extend((sub, f"{where}[{i}]", above) for i, sub in enumerate(item))
        elif isinstance(item, str):
            found = _text_problem(item, "contains")
            if found:
                return Problem(where, found)
        elif isinstance(item, int | float):
            found = _number_problem(item, "")
            if found:
                return Problem(where, found)
        elif item is not None:
            return Problem(
                where, f"a {type(item).__name__} is not JSON-encodable; use a dict, list, str, number or None"
            )
    return Problem(
        path,
        f"is nested too deeply to encode as JSON (past Python's recursion limit, {sys.getrecursionlimit()} "
        "levels); flatten it",
    )


def normalize_tags(tags: Iterable[Any]) -> tuple[tuple[str, ...], list[Problem]]:
    """Oban's tag normalisation: trimmed, lower-cased, empty ones dropped, de-duplicated."""
    if isinstance(tags, str):
        return (), [Problem("tags", f"expected a list of strings, got the string {short_repr(tags)}")]
    if not isinstance(tags, Iterable):
        return (), [Problem("tags", f"expected a list of strings, got {short_repr(tags)}")]
    problems: list[Problem] = []
    seen: dict[str, None] = {}
    for index, tag in enumerate(tags):
        message = text_problem(tag)  # a WorkerSpec's tags are checked by the same function
        if message is not None:
            problems.append(Problem(f"tags[{index}]", message))
            continue
        normal = tag.strip().lower()
        if normal:
            seen.setdefault(normal, None)
    return tuple(seen), problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_check_name = name_problems


def _utf8(text: str) -> bool:
    """True when `text` encodes as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _resolve_worker(worker: Any, registry: WorkerRegistry) -> tuple[str, WorkerSpec | None, list[Problem]]:
    """(stored name, registered spec, problems) for a worker name."""
    if not isinstance(worker, str):
        return "", None, [Problem("worker", f"expected an Elixir module name as a string, got {short_repr(worker)}")]
    name = worker.strip().removeprefix("Elixir.")
    spec = registry.resolve(name)
    if spec is not None:
        return spec.name, spec, _check_name("worker", spec.name)
    problems = _check_name("worker", name)
    if problems:
        return name, None, problems
    segments = name.split(".")
    if len(segments) == 1:
        return (
            name,
            None,
            [
                Problem(
                    "worker",
                    f"{name!r} is a bare module name: Oban would fail the job with "
                    f"'unknown worker: {name}' and retry it until discarded. Use the full module name "
                    f"(e.g. 'Cinegraph.Workers.{name}') or register the worker in the WorkerRegistry",
                )
            ],
        )
    if not all(_MODULE_SEGMENT.match(s) for s in segments):
        return (
            name,
            None,
            [
                Problem(
                    "worker",
                    f"{name!r} is not an Elixir module name (dot-separated segments starting with a "
                    "capital letter, e.g. 'Cinegraph.Workers.TMDbDetailsWorker')",
                )
            ],
        )
    return name, None, []


def _normalize_replace(replace: Any) -> tuple[tuple[tuple[str, tuple[str, ...]], ...] | None, list[Problem]]:
    """`replace` as a tuple of (state, fields): a plain list applies to every state, like Oban."""
    if replace is None:
        return None, []
    if isinstance(replace, Mapping):
        items = [(str(state), fields) for state, fields in replace.items()]
    elif isinstance(replace, Sequence) and not isinstance(replace, str):
        items = [(state, replace) for state in JOB_STATES]
    else:
        return None, [
            Problem("replace", f"expected a list of fields or a mapping of state to fields, got {short_repr(replace)}")
        ]
    problems: list[Problem] = []
    normal: list[tuple[str, tuple[str, ...]]] = []
    for state, chosen in items:
        if state not in JOB_STATES:
            problems.append(
                Problem("replace", f"has an invalid state {short_repr(state)}; states are {list(JOB_STATES)}")
            )
            continue
        if isinstance(chosen, str) or not isinstance(chosen, Sequence):
            problems.append(
                Problem(f"replace[{short_repr(state)}]", f"expected a list of fields, got {short_repr(chosen)}")
            )
            continue
        bad = [f for f in chosen if f not in REPLACEABLE_FIELDS]
        if bad:
            problems.append(Problem("replace", f"has invalid fields {bad}; replaceable: {list(REPLACEABLE_FIELDS)}"))
            continue
        normal.append((state, tuple(str(f) for f in chosen)))
    return (None if problems else tuple(normal)), problems


@dataclass(frozen=True, slots=True)
class Job:
    """One row of `oban_jobs`, as it will be written or as it was read."""

    worker: str
    args: Mapping[str, Any] = field(default_factory=dict)
    queue: str = "default"
    meta: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    priority: int = 0
    max_attempts: int = 20
    state: str = "available"
    scheduled_at: datetime | None = None
    unique: Unique | None = None
    replace: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    # Set once the job is in the database.
    id: int | None = None
    attempt: int = 0
    inserted_at: datetime | None = None
    attempted_at: datetime | None = None
    attempted_by: tuple[str, ...] | None = None
    completed_at: datetime | None = None
    discarded_at: datetime | None = None
    cancelled_at: datetime | None = None
    errors: tuple[Mapping[str, Any], ...] = ()
    conflict: bool = False
    args_json: str = field(default="{}", repr=False, compare=False)
    meta_json: str = field(default="{}", repr=False, compare=False)
    # True for a job built by `Job.new` (validated, args and meta encoded): `validated()` then
    # has nothing to do. A Job built with its constructor or `dataclasses.replace` is checked
    # again by `validated()`, which every insert calls.
    _validated: bool = field(default=False, init=False, repr=False, compare=False)

    @classmethod
    def new(
        cls,
        worker: str,
        args: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        meta: Mapping[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        scheduled_at: datetime | None = None,
        schedule_in: float | timedelta | None = None,
        state: str | None = None,
        unique: Unique | Mapping[str, Any] | bool | None = None,
        replace: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        registry: WorkerRegistry | None = None,
    ) -> Job:
        """Build and validate a job as `Oban.Job.new/2` (or `MyWorker.new/2`) would.

        Options the job does not set come from the worker's registered spec, then Oban's
        defaults. Every problem is collected and raised together as one `ValidationError`.
        `unique=False` opts out of a worker's declared uniqueness.
        """
        registry = DEFAULT_REGISTRY if registry is None else registry
        problems: list[Problem] = []
        if not isinstance(registry, WorkerRegistry):
            problems.append(Problem("registry", f"expected a WorkerRegistry, got {short_repr(registry)}"))
            registry = WorkerRegistry()

        worker_name, spec, found = _resolve_worker(worker, registry)
        problems += found

        args_json, found = encode_json_object({} if args is None else args, "args")
        problems += found
        meta_json, found = encode_json_object({} if meta is None else meta, "meta")
        problems += found

        if queue is None:
            queue = spec.queue if spec and spec.queue else "default"
        problems += _check_name("queue", queue)

        if priority is None:
            priority = spec.priority if spec and spec.priority is not None else 0
        if not _is_int(priority) or not 0 <= priority <= 9:
            problems.append(Problem("priority", f"must be an integer 0..9 (0 runs first), got {short_repr(priority)}"))

        if max_attempts is None:
            max_attempts = spec.max_attempts if spec and spec.max_attempts is not None else 20
        if not _is_int(max_attempts) or not 0 < max_attempts <= MAX_INT4:
            problems.append(
                Problem(
                    "max_attempts", f"must be an integer 1..{MAX_INT4} (greater than 0), got {short_repr(max_attempts)}"
                )
            )

        if tags is None:
            tags = spec.tags if spec else ()
        tag_list, found = normalize_tags(tags)
        problems += found

        when: datetime | None = None
        if scheduled_at is not None and schedule_in is not None:
            problems.append(Problem("schedule_in", "give scheduled_at or schedule_in, not both"))
        elif scheduled_at is not None:
            if isinstance(scheduled_at, datetime):
                try:
                    when = to_naive_utc(scheduled_at)
                except OverflowError:  # an aware time in the year 1 or 9999, past the end in UTC
                    problems.append(
                        Problem(
                            "scheduled_at",
                            f"{scheduled_at.isoformat()} is outside the years 1..9999 once converted to UTC; "
                            "give a later or earlier time",
                        )
                    )
            else:
                problems.append(Problem("scheduled_at", f"expected a datetime, got {short_repr(scheduled_at)}"))
        elif schedule_in is not None:
            try:
                if isinstance(schedule_in, timedelta):
                    when = utc_now() + schedule_in
                elif (
                    isinstance(schedule_in, int | float)
                    and not isinstance(schedule_in, bool)
                    and math.isfinite(schedule_in)
                ):
                    when = utc_now() + timedelta(seconds=schedule_in)
                else:
                    problems.append(
                        Problem(
                            "schedule_in",
                            f"expected a finite number of seconds or a timedelta, got {short_repr(schedule_in)}",
                        )
                    )
            except OverflowError:
                problems.append(
                    Problem(
                        "schedule_in",
                        f"{short_repr(schedule_in)}{'' if isinstance(schedule_in, timedelta) else ' seconds'} from now "
                        "is outside the years 1..9999; give a delay that ends inside them",
                    )
                )

        if state is None:
            state = "scheduled" if when is not None else "available"
        elif state not in INSERTABLE_STATES:
            problems.append(Problem("state", f"a new job is {' or '.join(INSERTABLE_STATES)}, got {short_repr(state)}"))
        elif state == "available" and when is not None:
            problems.append(
                Problem(
                    "state",
                    "an available job with a scheduled time runs at once (Oban's fetch ignores "
                    "scheduled_at); leave state unset to get 'scheduled'",
                )
            )

        unique_opts: Unique | None = None
        if unique is None:
            unique_opts = spec.unique if spec else None
        elif unique is not False:
            unique_opts, found = Unique.build(unique)
            problems += found

        replace_opts, found = _normalize_replace(replace)
        problems += found
        if replace_opts is not None and unique_opts is None:
            problems.append(Problem("replace", "only applies to unique jobs; set unique too"))

        if problems:
            raise ValidationError(f"job for worker {short_repr(worker)}", problems)
        assert args_json is not None and meta_json is not None
        job = cls(
            worker=worker_name,
            args={} if args is None else args,
            queue=queue,
            meta={} if meta is None else meta,
            tags=tag_list,
            priority=priority,
            max_attempts=max_attempts,
            state=state,
            scheduled_at=when,
            unique=unique_opts,
            replace=replace_opts,
            args_json=args_json,
            meta_json=meta_json,
        )
        _set(job, "_validated", True)
        return job

    def validated(self) -> Job:
        """This job, checked as `Job.new` checks one: itself when `Job.new` built it (or it was
        read from the database), else rebuilt through the checks of `Job.new` from its own
        fields, which re-encodes its args and meta, or a ValidationError naming every invalid
        field. The fields Job.new does not take (`id`, `attempt`, the timestamps, `errors`,
        `conflict`) are kept as they are.

        Every insert calls it, so that a Job built with the constructor or changed with
        `dataclasses.replace` (a queue with a NUL, args with colliding keys) is refused before
        the database instead of being cut short by it. The worker is taken as it is, with no
        registry: a bare name must be resolved by `Job.new`.
        """
        if self._validated:
            return self
        replace: Any = self.replace
        if isinstance(replace, tuple) and all(isinstance(pair, tuple) and len(pair) == 2 for pair in replace):
            replace = dict(replace)
        job = Job.new(
            self.worker,
            self.args,
            queue=self.queue,
            meta=self.meta,
            tags=self.tags,
            priority=self.priority,
            max_attempts=self.max_attempts,
            scheduled_at=self.scheduled_at,
            state=self.state,
            unique=False if self.unique is None else self.unique,
            replace=replace,
            registry=_NO_WORKERS,
        )
        for name in _KEPT_BY_VALIDATED:
            _set(job, name, getattr(self, name))
        return job

    def stored(self, id: int, inserted_at: datetime, scheduled_at: datetime) -> Job:
        """This job as the database stored it: with its id and times, and without the insert
        options that are not columns (`unique`, `replace`), like a job read back.

        The same as `dataclasses.replace`, without running `__init__` again, field by field
        (every insert returns one; tests check that no field is missed).
        """
        new = _new(Job)
        _set(new, "worker", self.worker)
        _set(new, "args", self.args)
        _set(new, "queue", self.queue)
        _set(new, "meta", self.meta)
        _set(new, "tags", self.tags)
        _set(new, "priority", self.priority)
        _set(new, "max_attempts", self.max_attempts)
        _set(new, "state", self.state)
        _set(new, "scheduled_at", scheduled_at)
        _set(new, "unique", None)
        _set(new, "replace", None)
        _set(new, "id", id)
        _set(new, "attempt", self.attempt)
        _set(new, "inserted_at", inserted_at)
        _set(new, "attempted_at", self.attempted_at)
        _set(new, "attempted_by", self.attempted_by)
        _set(new, "completed_at", self.completed_at)
        _set(new, "discarded_at", self.discarded_at)
        _set(new, "cancelled_at", self.cancelled_at)
        _set(new, "errors", self.errors)
        _set(new, "conflict", self.conflict)
        _set(new, "args_json", self.args_json)
        _set(new, "meta_json", self.meta_json)
        _set(new, "_validated", True)
        return new

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, conflict: bool = False) -> Job:
        """A job read from `oban_jobs` (a dict row); unknown extra columns are ignored."""
        args = row.get("args") or {}
        meta = row.get("meta") or {}
        job = cls(
            id=row["id"],
            state=str(row["state"]),
            queue=row["queue"],
            worker=row["worker"],
            args=args,
            meta=meta,
            tags=tuple(row.get("tags") or ()),
            priority=row.get("priority", 0),
            max_attempts=row["max_attempts"],
            attempt=row["attempt"],
            scheduled_at=row["scheduled_at"],
            inserted_at=row["inserted_at"],
            attempted_at=row.get("attempted_at"),
            attempted_by=tuple(row["attempted_by"]) if row.get("attempted_by") is not None else None,
            completed_at=row.get("completed_at"),
            discarded_at=row.get("discarded_at"),
            cancelled_at=row.get("cancelled_at"),
            errors=tuple(row.get("errors") or ()),
            conflict=conflict,
            args_json=json.dumps(args, separators=(",", ":")),
            meta_json=json.dumps(meta, separators=(",", ":")),
        )
        _set(job, "_validated", True)  # as the database holds it
        return job


_new = object.__new__
_set = object.__setattr__
#: `validated()` takes a job's own fields as they are, with no worker's options merged in.
_NO_WORKERS = WorkerRegistry()
#: The fields `Job.new` does not set, which `validated()` carries over from the job it checks.
_KEPT_BY_VALIDATED = (
    "id",
    "attempt",
    "inserted_at",
    "attempted_at",
    "attempted_by",
    "completed_at",
    "discarded_at",
    "cancelled_at",
    "errors",
    "conflict",
)
