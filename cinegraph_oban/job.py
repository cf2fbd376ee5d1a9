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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cinegraph_oban.errors import Problem, ValidationError
from cinegraph_oban.timestamps import to_naive_utc, utc_now
from cinegraph_oban.unique import JOB_STATES, REPLACEABLE_FIELDS, Unique
from cinegraph_oban.workers import DEFAULT_REGISTRY, WorkerRegistry, WorkerSpec

__all__ = ["Job", "encode_json_object", "normalize_tags"]

MAX_NAME_LENGTH = 127  # CHECK (char_length(...) < 128) on worker and queue
MAX_INT4 = 2_147_483_647
INSERTABLE_STATES = ("available", "scheduled", "suspended")
_MODULE_SEGMENT = re.compile(r"[A-Z][A-Za-z0-9_]*\Z")
# A NUL character as JSON writes it: \u0000 after an even number of backslashes (a literal
# backslash followed by "u0000" is written \\u0000 and is fine).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
# The C encoder that _ENCODER.encode builds anew on every call, built once. No circular check:
# a cycle ends in RecursionError, and _locate_json_problem then names where the cycle closes.
_C_ENCODE: Any = None
with contextlib.suppress(AttributeError, TypeError):  # an interpreter without the C accelerator
    _C_ENCODE = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )


def _encode(value: Any) -> str:
    if _C_ENCODE is None:  # pragma: no cover
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def encode_json_object(value: Any, name: str) -> tuple[str | None, list[Problem]]:
    """Encode a JSON object the way PostgreSQL's jsonb will accept it, or say why not.

    Objects only (Oban's args and meta are maps), no NaN or Infinity, no NUL characters and no
    lone surrogates (jsonb rejects both). Non-string keys become strings, as Jason encodes an
    Elixir map's atom or integer keys.
    """
    if not isinstance(value, Mapping):
        return None, [Problem(name, f"must be a JSON object (a dict), got {type(value).__name__}")]
    if not value:
        return "{}", []
    try:
        text = _encode(value)
        if not text.isascii():
            text.encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError):
        return None, [_locate_json_problem(value, name)]
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        return None, [_locate_json_problem(value, name)]
    collision = _key_collision(value, name)
    if collision is not None:
        return None, [collision]
    return text, []


def _key_collision(value: Mapping[str, Any], path: str) -> Problem | None:
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
                            f"keys {seen[written]!r} and {key!r} are both written {written!r} in JSON, "
                            "and one value would be lost; keep one of them",
                        )
                    seen[written] = key
        elif isinstance(item, list | tuple):
            stack.extend(
                (sub, f"{where}[{i}]") for i, sub in enumerate(item) if isinstance(sub, Mapping | list | tuple)
            )
    return None


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
                if isinstance(key, str) and "\x00" in key:
                    return Problem(where, f"key {key!r} contains a NUL character, which PostgreSQL's jsonb rejects")
                stack.append((sub, f"{where}[{key!r}]", above))
        elif isinstance(item, list | tuple):
            stack.extend((sub, f"{where}[{i}]", above) for i, sub in enumerate(item))
        elif isinstance(item, str):
            if "\x00" in item:
                return Problem(where, "contains a NUL character, which PostgreSQL's jsonb rejects")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return Problem(where, "contains a lone surrogate, which is not valid UTF-8")
        elif isinstance(item, float) and not math.isfinite(item):
            return Problem(where, f"{item!r} is not valid JSON; use null or a string")
        elif item is not None and not isinstance(item, bool | int | float):
            return Problem(where, f"a {type(item).__name__} is not JSON-encodable")
    return Problem(path, "is not JSON-encodable (nested too deeply?)")


def normalize_tags(tags: Iterable[Any]) -> tuple[tuple[str, ...], list[Problem]]:
    """Oban's tag normalisation: trimmed, lower-cased, empty ones dropped, de-duplicated."""
    if isinstance(tags, str):
        return (), [Problem("tags", f"expected a list of strings, got the string {tags!r}")]
    if not isinstance(tags, Iterable):
        return (), [Problem("tags", f"expected a list of strings, got {tags!r}")]
    problems: list[Problem] = []
    seen: dict[str, None] = {}
    for index, tag in enumerate(tags):
        if not isinstance(tag, str):
            problems.append(Problem(f"tags[{index}]", f"expected a string, got {tag!r}"))
            continue
        if "\x00" in tag:
            problems.append(Problem(f"tags[{index}]", "contains a NUL character, which PostgreSQL rejects"))
            continue
        if not tag.isascii() and not _utf8(tag):
            problems.append(Problem(f"tags[{index}]", "contains a lone surrogate, which is not valid UTF-8"))
            continue
        normal = tag.strip().lower()
        if normal:
            seen.setdefault(normal, None)
    return tuple(seen), problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_name(label: str, value: Any) -> list[Problem]:
    if not isinstance(value, str):
        return [Problem(label, f"expected a string, got {value!r}")]
    if not 1 <= len(value) <= MAX_NAME_LENGTH:
        return [Problem(label, f"must be 1..{MAX_NAME_LENGTH} characters, got {len(value)}")]
    if "\x00" in value:
        return [Problem(label, "contains a NUL character, which PostgreSQL rejects")]
    if not value.isascii() and not _utf8(value):
        return [Problem(label, "contains a lone surrogate, which is not valid UTF-8")]
    return []


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
        return "", None, [Problem("worker", f"expected an Elixir module name as a string, got {worker!r}")]
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
        return None, [Problem("replace", f"expected a list of fields or a mapping of state to fields, got {replace!r}")]
    problems: list[Problem] = []
    normal: list[tuple[str, tuple[str, ...]]] = []
    for state, chosen in items:
        if state not in JOB_STATES:
            problems.append(Problem("replace", f"has an invalid state {state!r}; states are {list(JOB_STATES)}"))
            continue
        if isinstance(chosen, str) or not isinstance(chosen, Sequence):
            problems.append(Problem(f"replace[{state!r}]", f"expected a list of fields, got {chosen!r}"))
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
            problems.append(Problem("registry", f"expected a WorkerRegistry, got {registry!r}"))
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
            problems.append(Problem("priority", f"must be an integer 0..9 (0 runs first), got {priority!r}"))

        if max_attempts is None:
            max_attempts = spec.max_attempts if spec and spec.max_attempts is not None else 20
        if not _is_int(max_attempts) or not 0 < max_attempts <= MAX_INT4:
            problems.append(Problem("max_attempts", f"must be an integer greater than 0, got {max_attempts!r}"))

        if tags is None:
            tags = spec.tags if spec else ()
        tag_list, found = normalize_tags(tags)
        problems += found

        when: datetime | None = None
        if scheduled_at is not None and schedule_in is not None:
            problems.append(Problem("schedule_in", "give scheduled_at or schedule_in, not both"))
        elif scheduled_at is not None:
            if isinstance(scheduled_at, datetime):
                when = to_naive_utc(scheduled_at)
            else:
                problems.append(Problem("scheduled_at", f"expected a datetime, got {scheduled_at!r}"))
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
                    problems.append(Problem("schedule_in", f"expected seconds or a timedelta, got {schedule_in!r}"))
            except OverflowError:
                problems.append(
                    Problem("schedule_in", f"{schedule_in!r} is beyond the year 9999; give a delay that ends before it")
                )

        if state is None:
            state = "scheduled" if when is not None else "available"
        elif state not in INSERTABLE_STATES:
            problems.append(Problem("state", f"a new job is {' or '.join(INSERTABLE_STATES)}, got {state!r}"))
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
            raise ValidationError(f"job for worker {worker!r}", problems)
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
        read from the database), else rebuilt through `Job.new` from its own fields, which
        re-encodes its args and meta, or a ValidationError naming every invalid field.

        Every insert calls it, so that a Job built with the constructor or changed with
        `dataclasses.replace` (a queue with a NUL, args with colliding keys) is refused before
        the database instead of being cut short by it.
        """
        if self._validated or self.id is not None:
            return self
        return Job.new(
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
            replace=None if self.replace is None else dict(self.replace),
            registry=_NO_WORKERS,
        )

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
        return cls(
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


_new = object.__new__
_set = object.__setattr__
#: `validated()` takes a job's own fields as they are, with no worker's options merged in.
_NO_WORKERS = WorkerRegistry()
