"""The README's Python tour, run as a new user would run it, against a fresh database."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

from conftest import ObanDatabase

README = Path(__file__).resolve().parent.parent / "README.md"
TOUR_DSN = "postgresql://postgres@127.0.0.1/cinegraph_tour"


def test_the_python_tour_runs_as_written(oban: ObanDatabase) -> None:
    # The tour's printed ids need a database as fresh as a clone of its template.
    fresh = oban.conn.execute(
        "SELECT (SELECT is_called FROM public.oban_jobs_id_seq), (SELECT count(*) FROM oban_jobs), "
        "(SELECT array_agg(application_name || ':' || state) FROM pg_stat_activity "
        " WHERE datname = current_database() AND pid <> pg_backend_pid())"
    ).fetchone()
    assert fresh == (False, 0, None), f"not a fresh database: {fresh}"
    text = README.read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if not b.startswith("# asyncio face")]
    assert len(blocks) >= 3, "the tour's enqueueing, outcome and querying snippets"
    assert TOUR_DSN in blocks[0], "the tour names its scratch database"
    # One script, as a reader pasting the three snippets in turn; 1,000 jobs instead of 100,000.
    script = (
        "\n".join(blocks[:3])
        .replace(TOUR_DSN, oban.dsn)
        .replace("range(1_000_000, 1_100_000)", "range(1_000_000, 1_001_000)")
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(script, str(README), "exec"), {})
    printed = out.getvalue().splitlines()
    assert printed[0] == "1 available tmdb 5"
    assert printed[1] == "scheduled False"
    assert "1001_movies no_tmdb_match" in printed
    assert printed[-1] == "tt0000417 A Trip to the Moon"
    states = dict(
        oban.conn.execute("SELECT state::text, count(*) FROM oban_jobs GROUP BY 1").fetchall()  # type: ignore[arg-type]
    )
    assert states == {"available": 1 + 1_000 + 1, "scheduled": 1, "cancelled": 1}, states


def _run_tour(script: str, dsn: str) -> list[str]:
    script = script.replace(TOUR_DSN, dsn).replace("range(1_000_000, 1_100_000)", "range(1_000_000, 1_001_000)")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(script, str(README), "exec"), {})
    return out.getvalue().splitlines()


def _rows(oban: ObanDatabase) -> list[tuple[Any, ...]]:
    """Every job, its meta without the instants (`*_at`: stamped when the record was made)."""
    rows = oban.conn.execute(
        "SELECT id, state::text, queue, worker, args, meta, tags, priority, max_attempts, attempt "
        "FROM oban_jobs ORDER BY id"
    ).fetchall()
    return [(*row[:5], {k: v for k, v in row[5].items() if not k.endswith("_at")}, *row[6:]) for row in rows]


def test_the_asyncio_tour_prints_and_stores_what_the_sync_tour_does(oban: ObanDatabase) -> None:
    """The asyncio face's tour against the sync tour's first, second and querying snippets,
    each on an empty table: the same printed lines (but the query's SQL) and the same rows."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    [asyncio_block] = [b for b in blocks if b.startswith("# asyncio face")]
    sync_blocks = [b for b in blocks if not b.startswith("# asyncio face")]
    querying = next(b for b in sync_blocks if "read_failed_lookups(conn, failed_lookups(" in b)
    printed = _run_tour("\n".join([*sync_blocks[:2], querying]), oban.dsn)
    expected = [line for line in printed if "SELECT" not in line and not line.startswith(("FROM", "WHERE"))]
    sync_rows = _rows(oban)
    oban.conn.execute("TRUNCATE oban_jobs RESTART IDENTITY")
    assert _run_tour(asyncio_block, oban.dsn) == expected
    assert expected == [
        "1 available tmdb 5",
        "scheduled False",
        "1001_movies no_tmdb_match",
        "tt0000417 A Trip to the Moon",
    ]
    assert _rows(oban) == sync_rows


def test_the_migration_tour_in_both_faces_prints_and_restores_the_same(
    oban: ObanDatabase, tmp_path: Path, monkeypatch: Any
) -> None:
    """The migration's two snippets, each on the same legacy tables: the same printed lines, and
    `down` at the end of each gives the tables back as they were."""
    from cinegraph_oban.migration.sample_data import create_legacy_sample
    from tests.helpers import snapshot

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    [sync_block] = [b for b in blocks if b.startswith("# migration, sync face")]
    [async_block] = [b for b in blocks if b.startswith("# migration, asyncio face")]
    create_legacy_sample(oban.conn, "public", 25)
    before = snapshot(oban.conn, "public")
    monkeypatch.chdir(tmp_path)  # the snippets' export_dir="backup"
    printed = _run_tour(sync_block, oban.dsn)
    assert printed == ["pending", "25 migrated"], printed
    assert snapshot(oban.conn, "public") == before
    assert _run_tour(async_block, oban.dsn) == printed
    assert snapshot(oban.conn, "public") == before
