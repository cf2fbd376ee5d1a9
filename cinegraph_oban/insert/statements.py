"""The statements that write jobs, as (SQL, parameters) pairs, shared by every client.

Nothing here touches a connection: each builder takes validated `Job`s and the detected
`ObanTable` and returns the rendered template with its bound parameters. The sync and async
clients only decide how to send them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from cinegraph_oban.insert import row
from cinegraph_oban.insert.row import json_param
from cinegraph_oban.model.job import Job
from cinegraph_oban.model.unique import DEFAULT_OBAN_VERSION, Unique
from cinegraph_oban.oban.table import ObanTable
from cinegraph_oban.sql import builder
from cinegraph_oban.sql.builder import Statement

__all__ = [
    "Statement",
    "copy_row",
    "copy_statement",
    "copy_types",
    "insert_all_statement",
    "insert_statement",
    "note_probed",
    "notify_statement",
    "own_transaction_lock",
    "reserve_ids_statement",
    "unique_statements",
]


@cache
def insert_payload(queue: str) -> str:
    """Oban's insert notification payload, encoded as Jason encodes it."""
    return json.dumps({"queue": queue}, separators=(",", ":"), ensure_ascii=False)


def _notify_params(job: Job, table: ObanTable) -> tuple[bool, dict[str, Any]]:
    notify = not table.notifies_itself
    return notify, ({"channel": table.channel, "payload": insert_payload(job.queue)} if notify else {})


@cache
def transaction_sql() -> tuple[bytes, bytes]:
    """BEGIN and COMMIT, for the unique insert on an autocommit connection."""
    return builder.sql("session/begin"), builder.sql("session/commit")


@cache
def isolation_sql() -> bytes:
    """The isolation level of the current transaction, checked before a unique insert joins it."""
    return builder.sql("session/transaction_isolation")


@cache
def rollback_sql() -> bytes:
    return builder.sql("session/rollback")


@cache
def insert_sql(prefix: str, scheduled: bool, notify: bool) -> bytes:
    return builder.sql("insert/insert_job", prefix=prefix, scheduled=scheduled, notify=notify)


def insert_statement(job: Job, table: ObanTable) -> Statement:
    """A plain insert with its notification, as one statement."""
    notify, params = _notify_params(job, table)
    params.update(row.params(job))
    return Statement(insert_sql(table.prefix, job.scheduled_at is not None, notify), params)


def _unique_subset(job: Job, field: str, keys: Sequence[str]) -> tuple[str, str | None, Any]:
    """(mode, json, value) for one of args/meta: exact match, containment of the keys, or empty."""
    text = job.args_json if field == "args" else job.meta_json
    if not keys:
        return ("empty", None, {}) if text == "{}" else ("exact", text, json.loads(text))
    source = job.args if field == "args" else job.meta
    taken = {str(k): v for k, v in source.items() if str(k) in keys}
    if not taken:
        return "empty", None, {}
    return "contains", _COMPACT_JSON.encode(taken), taken


_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_SORTED_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@cache
def _unique_identity(
    unique: Unique, known_states: tuple[str, ...], oban_version: str
) -> tuple[list[str], Mapping[str, Any]]:
    """The states the lookup uses (those the database has) and the part of the lock's identity
    that depends only on the options; the caller adds the job's own values to a copy."""
    states = [s for s in unique.states_for(oban_version) if s in known_states]
    return states, {"fields": sorted(unique.fields), "keys": sorted(unique.keys), "states": sorted(states)}


def unique_statements(
    job: Job,
    table: ObanTable,
    oban_version: str = DEFAULT_OBAN_VERSION,
    unselective: Collection[tuple[str, str, str, str]] = frozenset(),
) -> tuple[Statement, Statement]:
    """The lock, then the lookup-and-insert, for a job with unique options (whose default states
    are those of `oban_version`), probing with no key the client has found `unselective` (see
    `note_probed`).

    The two must run in this order inside one transaction, as separate statements: the lookup
    takes its snapshot after the lock is held.
    """
    unique = job.unique
    assert unique is not None
    states, base = _unique_identity(unique, table.states, oban_version)
    identity = dict(base)
    map_fields: list[tuple[str, str]] = []
    params = row.params(job)
    probe: tuple[str, str, str, str] | None = None
    for field in ("args", "meta"):
        if field in unique.fields:
            mode, subset, identity[field] = _unique_subset(job, field, unique.keys)
            map_fields.append((field, mode))
            if subset is not None:
                params[f"{field}_unique"] = json_param(subset)
                if probe is None and field in table.probe_columns:
                    probe = _probe(table.prefix, job.worker, field, identity[field], unique.keys, unselective)
                    if probe is not None:
                        params["probe_path"] = _probe_path(identity[field][probe[3]])
    for field in ("worker", "queue"):
        if field in unique.fields:
            identity[field] = getattr(job, field)
    replace_fields: list[str] = []
    if job.replace:
        by_field: dict[str, list[str]] = {}
        for state, fields in job.replace:
            for field in fields:
                by_field.setdefault(field, []).append(state)
        replace_fields = sorted(by_field)
        params.update({f"replace_{f}": states_ for f, states_ in by_field.items()})
    notify, notify_params = _notify_params(job, table)
    params.update(notify_params)
    params["unique_states"] = states
    if unique.period != "infinity":
        params["unique_period"] = unique.period
    sql = _unique_sql(
        table.prefix,
        job.scheduled_at is not None,
        notify,
        unique.period != "infinity",
        unique.timestamp,
        tuple(sorted(unique.fields)),
        tuple(map_fields),
        tuple(replace_fields),
        probe[2] if probe else None,
    )
    lock_key = table.prefix + "|" + _SORTED_JSON.encode(identity)
    return Statement(_unique_lock_sql(), {"lock_key": lock_key}), Statement(sql, params, probe)


#: A probe that finds more candidates than this marks its key as unselective (see `_probe`).
PROBE_CANDIDATES = 64

#: Keys a client remembers as unselective at most (insertion.ClientMemory.unselective).
UNSELECTIVE_LIMIT = 10_000


def _probe(
    prefix: str,
    worker: str,
    field: str,
    subset: Mapping[str, Any],
    keys: Sequence[str],
    unselective: Collection[tuple[str, str, str, str]],
) -> tuple[str, str, str, str] | None:
    """Which value of the job's args/meta the lookup searches Oban's GIN index for: that of the
    first unique key (in the order the worker lists them; all of them in args order when it
    lists none) whose value is a string or an integer, and whose probes have not proved
    unselective. None: the lookup searches for the whole containment, as Oban does."""
    for key in keys or subset:
        value = subset.get(key, _MISSING)
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            candidate = (prefix, worker, field, key)
            if candidate not in unselective:
                return candidate
    return None


_MISSING = object()


def _probe_path(value: str | int) -> str:
    """A jsonpath true for a JSON object with any member equal to `value`, which PostgreSQL's
    jsonb_ops GIN index serves with that one value's entry. `strict`: in lax mode a string is
    also searched as a key (jsonb_ops stores array strings as keys), and a value that is also a
    key name (`"imdb_id"`) would read every job that has that key."""
    literal = _COMPACT_JSON.encode(value) if isinstance(value, str) else int.__repr__(value)
    return "strict $.* ? (@ == " + literal + ")"


def note_probed(lookup: Statement, row: Mapping[str, Any], unselective: set[tuple[str, str, str, str]]) -> None:
    """Learn from a unique lookup's result: a probe that found many candidates (a value many
    jobs share, such as a source name) goes into the client's `unselective` keys, and the
    client no longer probes with that worker and key."""
    if (
        lookup.probe is not None
        and (row.get("probed") or 0) > PROBE_CANDIDATES
        and len(unselective) < UNSELECTIVE_LIMIT
    ):
        unselective.add(lookup.probe)


@cache
def _unique_sql(
    prefix: str,
    scheduled: bool,
    notify: bool,
    period: bool,
    timestamp: str,
    fields: tuple[str, ...],
    map_fields: tuple[tuple[str, str], ...],
    replace: tuple[str, ...],
    probe: str | None,
) -> bytes:
    return builder.sql(
        "insert/insert_unique",
        prefix=prefix,
        scheduled=scheduled,
        notify=notify,
        period=period,
        timestamp=timestamp,
        fields=fields,
        map_fields=map_fields,
        replace=replace,
        probe=probe,
        probe_limit=PROBE_CANDIDATES,
    )


@cache
def _unique_lock_sql(generic_plans: bool = False) -> bytes:
    return builder.sql("insert/unique_lock", generic_plans=generic_plans)


def own_transaction_lock(lock: Statement, lookup: Statement) -> Statement:
    """The unique lock of `unique_statements`, for a transaction the client opens itself: when
    the lookup searches args or meta for values (read through sub-selects, so every plan of it
    is the same), it also keeps the lookup on its prepared generic plan until the transaction
    ends (see the template). A lookup by worker, queue and states only is left to PostgreSQL's
    choice: there the values do shape the plan."""
    if not any(f"{field}_unique" in lookup.params for field in ("args", "meta")):
        return lock
    return Statement(_unique_lock_sql(generic_plans=True), lock.params)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement in the form PostgreSQL prepares once per session and runs by name:
    `prepare` creates it, `params` names its `$1, $2, ...` in order."""

    name: str
    prepare: bytes
    params: tuple[str, ...]


_PLACEHOLDER = re.compile(rb"%%|%\((\w+)\)s")


@cache
def prepared(sql: bytes) -> Prepared:
    """The prepared form of a statement: its `%(name)s` become `$n` in order of appearance."""
    names: list[str] = []

    def number(match: re.Match[bytes]) -> bytes:
        if match.group(1) is None:
            return b"%"
        name = match.group(1).decode()
        if name not in names:
            names.append(name)
        return b"$%d" % (names.index(name) + 1)

    body = _PLACEHOLDER.sub(number, sql)
    name = "cinegraph_oban_" + hashlib.sha256(sql).hexdigest()[:20]
    prepare = builder.sql("session/prepare", statement_name=name) + b" " + body
    return Prepared(name, prepare, tuple(names))


@cache
def deallocate_sql(name: str) -> bytes:
    return builder.sql("session/deallocate", statement_name=name)


def insert_all_statement(jobs: Sequence[Job], table: ObanTable) -> Statement:
    """A small batch as one `unnest` statement, notifications included."""
    payloads = _payloads(jobs)
    notify = bool(payloads) and not table.notifies_itself
    params: dict[str, Any] = row.unnest_params(jobs)
    if notify:
        params.update({"channel": table.channel, "payloads": payloads})
    sql = builder.sql(
        "insert/insert_all_unnest",
        prefix=table.prefix,
        notify=notify,
        tags_type="character varying(255)[]" if table.max_tag_length else "text[]",
    )
    return Statement(sql, params)


def _payloads(jobs: Iterable[Job]) -> list[str]:
    queues = dict.fromkeys(j.queue for j in jobs if j.state == "available")
    return [insert_payload(q) for q in queues]


def notify_statement(queues: Iterable[str], table: ObanTable) -> Statement | None:
    """One notification per distinct queue, or None when there is nothing to send."""
    payloads = [insert_payload(q) for q in dict.fromkeys(queues)]
    if not payloads or table.notifies_itself:
        return None
    return Statement(
        builder.sql("insert/notify_queues"),
        {"channel": table.channel, "payloads": payloads},
    )


def reserve_ids_statement(count: int, table: ObanTable) -> Statement:
    return Statement(builder.sql("insert/reserve_ids"), {"sequence": table.id_sequence, "count": count})


def copy_statement(table: ObanTable, *, scheduled: bool) -> bytes:
    """The COPY of a chunk, to send without parameters (see `templates.unparametrized`)."""
    return builder.copy_sql("insert/copy_jobs", prefix=table.prefix, scheduled=scheduled)


def copy_types(table: ObanTable, *, scheduled: bool) -> list[str]:
    """Binary COPY types of a chunk's columns (see `row.copy_types`)."""
    return row.copy_types(scheduled=scheduled, varchar_tags=bool(table.max_tag_length))


copy_row = row.copy_row
