"""The installed Oban schema, compared with the contract as documented (not with our own installer).

The expectations below are transcribed from `oban-contract.md` ("oban_jobs at V14 (as created by
Elixir Oban)") and the version notes for V11..V14. If the templates drift from what Oban makes,
these tests fail.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from cinegraph_oban import UnsupportedSchemaError, detect
from cinegraph_oban.oban.table import install, install_statements, migrated_version
from conftest import ObanDatabase

# column: (type as format_type prints it, NOT NULL, default as pg_get_expr prints it)
V14_COLUMNS: dict[str, tuple[str, bool, str | None]] = {
    "id": ("bigint", True, "nextval('{prefix}.oban_jobs_id_seq'::regclass)"),
    "state": ("{prefix}.oban_job_state", True, "'available'::{prefix}.oban_job_state"),
    "queue": ("text", True, "'default'::text"),
    "worker": ("text", True, None),
    "args": ("jsonb", True, "'{{}}'::jsonb"),
    "errors": ("jsonb[]", True, "ARRAY[]::jsonb[]"),
    "attempt": ("integer", True, "0"),
    "max_attempts": ("integer", True, "20"),
    "inserted_at": ("timestamp without time zone", True, "timezone('UTC'::text, now())"),
    "scheduled_at": ("timestamp without time zone", True, "timezone('UTC'::text, now())"),
    "attempted_at": ("timestamp without time zone", False, None),
    "completed_at": ("timestamp without time zone", False, None),
    "attempted_by": ("text[]", False, None),
    "discarded_at": ("timestamp without time zone", False, None),
    "priority": ("integer", True, "0"),
    "tags": ("text[]", False, "ARRAY[]::text[]"),
    "meta": ("jsonb", False, "'{{}}'::jsonb"),
    "cancelled_at": ("timestamp without time zone", False, None),
}

CHECKS_V12_PLUS = {
    "worker_length": "CHECK (((char_length(worker) > 0) AND (char_length(worker) < 128)))",
    "queue_length": "CHECK (((char_length(queue) > 0) AND (char_length(queue) < 128)))",
    "positive_max_attempts": "CHECK ((max_attempts > 0))",
    "attempt_range": "CHECK (((attempt >= 0) AND (attempt <= max_attempts)))",
    "non_negative_priority": "CHECK ((priority >= 0)) NOT VALID",
}

INDEXES_V12 = {
    "oban_jobs_pkey": "USING btree (id)",
    "oban_jobs_state_queue_priority_scheduled_at_id_index": "USING btree (state, queue, priority, scheduled_at, id)",
    "oban_jobs_args_index": "USING gin (args)",
    "oban_jobs_meta_index": "USING gin (meta)",
}
INDEXES_V13 = {
    **INDEXES_V12,
    "oban_jobs_state_cancelled_at_index": "USING btree (state, cancelled_at)",
    "oban_jobs_state_discarded_at_index": "USING btree (state, discarded_at)",
}

STATES_V13 = ["available", "scheduled", "executing", "retryable", "completed", "discarded", "cancelled"]
STATES_V14 = ["available", "suspended", "scheduled", "executing", "retryable", "completed", "discarded", "cancelled"]


def _quoted(prefix: str) -> str:
    return psycopg.sql.Identifier(prefix).as_string() if prefix != "public" else ""


def catalog(conn: psycopg.Connection[Any], prefix: str) -> dict[str, Any]:
    table = f"{psycopg.sql.Identifier(prefix).as_string()}.oban_jobs"
    columns = {
        name: (typ, notnull, default)
        for name, typ, notnull, default in conn.execute(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
            FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
            """,
            (table,),
        ).fetchall()
    }
    checks = dict(
        conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'c'",
            (table,),
        ).fetchall()
    )
    indexes = {
        name: definition.split(" USING ", 1)[1].join(["USING ", ""])
        for name, definition in conn.execute(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) "
            "FROM pg_index WHERE indrelid = %s::regclass",
            (table,),
        ).fetchall()
    }
    indexes = {name.rsplit(".", 1)[-1].strip('"'): d for name, d in indexes.items()}
    triggers = [
        r[0]
        for r in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal", (table,)
        )
    ]
    states = conn.execute(
        "SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) "
        "FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
        "JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typname = 'oban_job_state' AND n.nspname = %s",
        (prefix,),
    ).fetchone()[0]
    comment = conn.execute("SELECT obj_description(%s::regclass, 'pg_class')", (table,)).fetchone()[0]
    peers = conn.execute(
        "SELECT relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = 'oban_peers' AND n.nspname = %s",
        (prefix,),
    ).fetchone()
    return {
        "columns": columns,
        "checks": checks,
        "indexes": indexes,
        "triggers": triggers,
        "states": states,
        "comment": comment,
        "peers": peers[0] if peers else None,
    }


def expected_columns(prefix: str) -> dict[str, tuple[str, bool, str | None]]:
    q = _quoted(prefix)
    typed = f"{q}." if q else ""
    seq = "oban_jobs_id_seq" if prefix == "public" else f"{q}.oban_jobs_id_seq"
    out = {}
    for name, (typ, notnull, default) in V14_COLUMNS.items():
        expected_default = None
        if default:
            expected_default = default.replace("{prefix}.oban_jobs_id_seq", seq)
            expected_default = expected_default.replace("{prefix}.", typed).replace("{{}}", "{}")
        out[name] = (typ.replace("{prefix}.", typed), notnull, expected_default)
    return out


@pytest.mark.parametrize("prefix", ["public", "cinegraph jobs"])
def test_v14_matches_the_documented_contract(db_conn: psycopg.Connection[Any], prefix: str) -> None:
    install(db_conn, 14, prefix)
    found = catalog(db_conn, prefix)
    assert found["columns"] == expected_columns(prefix)
    assert found["checks"] == CHECKS_V12_PLUS
    assert found["indexes"] == INDEXES_V13
    assert found["triggers"] == []
    assert found["states"] == STATES_V14
    assert found["comment"] == "14"
    assert found["peers"] == "u", "oban_peers is unlogged"


def test_v11_has_priority_range_and_the_insert_trigger(db_conn: psycopg.Connection[Any]) -> None:
    install(db_conn, 11)
    found = catalog(db_conn, "public")
    checks = dict(CHECKS_V12_PLUS)
    del checks["non_negative_priority"]
    checks["priority_range"] = "CHECK (((priority >= 0) AND (priority <= 3)))"
    assert found["checks"] == checks
    assert found["triggers"] == ["oban_notify"]
    assert found["indexes"] == INDEXES_V12
    assert found["states"] == STATES_V13
    assert found["comment"] == "11"


def test_v12_drops_trigger_and_relaxes_priority(db_conn: psycopg.Connection[Any]) -> None:
    install(db_conn, 12)
    found = catalog(db_conn, "public")
    assert found["checks"] == CHECKS_V12_PLUS
    assert found["triggers"] == []
    assert found["indexes"] == INDEXES_V12
    assert db_conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'oban_jobs_notify'").fetchone()[0] == 0


def test_v13_adds_the_pruning_indexes_but_not_suspended(db_conn: psycopg.Connection[Any]) -> None:
    install(db_conn, 13)
    found = catalog(db_conn, "public")
    assert found["indexes"] == INDEXES_V13
    assert found["states"] == STATES_V13


def test_upgrading_step_by_step_equals_installing_at_once(db_conn: psycopg.Connection[Any]) -> None:
    install(db_conn, 14, "at_once")
    for version in (11, 12, 13, 14):
        assert install(db_conn, version, "stepwise") == (version - 1 if version > 11 else 0)
    assert migrated_version(db_conn, "stepwise") == 14
    at_once, stepwise = catalog(db_conn, "at_once"), catalog(db_conn, "stepwise")
    renamed = {
        name: (typ.replace("at_once", "stepwise"), notnull, default.replace("at_once", "stepwise") if default else None)
        for name, (typ, notnull, default) in at_once["columns"].items()
    }
    assert renamed == stepwise["columns"]
    assert at_once["checks"] == stepwise["checks"]
    assert at_once["indexes"] == stepwise["indexes"]
    assert at_once["states"] == stepwise["states"]


def test_legacy_tags_are_varchar_and_detected(db_conn: psycopg.Connection[Any]) -> None:
    install(db_conn, 12, legacy_tags=True)
    assert catalog(db_conn, "public")["columns"]["tags"][0] == "character varying(255)[]"
    assert detect(db_conn).max_tag_length == 255


def test_install_statements_are_deterministic_and_terminated() -> None:
    first = install_statements(14, "public")
    assert first == install_statements(14, "public")
    assert all(s.endswith(";") for step in first for s in step)
    assert len(first) == 14


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("", "does not exist"),
        ("CREATE TABLE oban_jobs (id bigserial primary key)", "version 0"),
        ("CREATE TABLE oban_jobs (id bigserial primary key); COMMENT ON TABLE oban_jobs IS '10'", "version 10"),
        (
            "CREATE TABLE oban_jobs (id bigserial primary key); COMMENT ON TABLE oban_jobs IS 'jobs'",
            "not an Oban schema version",
        ),
        ("CREATE TABLE oban_jobs (id bigserial primary key); COMMENT ON TABLE oban_jobs IS '12'", "missing"),
    ],
)
def test_detect_explains_what_it_found(db_conn: psycopg.Connection[Any], setup: str, message: str) -> None:
    if setup:
        db_conn.execute(setup.encode())
    with pytest.raises(UnsupportedSchemaError, match=message):
        detect(db_conn)


def test_detect_reads_every_version(oban_any: ObanDatabase) -> None:
    found = detect(oban_any.conn, oban_any.prefix)
    assert found.version == oban_any.version
    assert found.has_notify_trigger is (oban_any.version == 11)
    assert found.max_priority == (3 if oban_any.version == 11 else 9)
    assert ("suspended" in found.states) is (oban_any.version >= 14)
    assert found.errors_type == "jsonb[]"


def test_pro_version_marker_counts_as_latest(oban: ObanDatabase) -> None:
    oban.conn.execute("COMMENT ON TABLE oban_jobs IS '∞'")
    assert detect(oban.conn).version == 14
