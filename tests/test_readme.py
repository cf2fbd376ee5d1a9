"""The README's Python tour, run as a new user would run it, against a fresh database."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from conftest import ObanDatabase

README = Path(__file__).resolve().parent.parent / "README.md"
TOUR_DSN = "postgresql://postgres@127.0.0.1/cinegraph_tour"


def test_the_python_tour_runs_as_written(oban: ObanDatabase) -> None:
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


def test_the_asyncio_snippet_runs_as_written(oban: ObanDatabase) -> None:
    """The asyncio face's snippet, after the sync tour's first two snippets (whose lookup it lists)."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    [asyncio_block] = [b for b in blocks if b.startswith("# asyncio face")]
    sync_blocks = [b for b in blocks if not b.startswith("# asyncio face")]
    script = "\n".join([*sync_blocks[:2], asyncio_block]).replace(TOUR_DSN, oban.dsn)
    script = script.replace("range(1_000_000, 1_100_000)", "range(1_000_000, 1_000_010)")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(script, str(README), "exec"), {})
    assert out.getvalue().splitlines()[-1] == "no_tmdb_match ['tt0000417', 'tt0000439']"
    assert oban.conn.execute("SELECT count(*) FROM oban_jobs WHERE state = 'cancelled'").fetchone() == (2,)
