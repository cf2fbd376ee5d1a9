"""The built wheel carries every SQL template, so an installed package can run without the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_every_sql_template(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("cinegraph_oban-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {
        f"cinegraph_oban/sql_templates/{p.relative_to(ROOT / 'sql_templates')}"
        for p in (ROOT / "sql_templates").rglob("*.j2")
    }
    assert templates, "no templates found in the checkout"
    assert templates <= names, sorted(templates - names)
    assert "cinegraph_oban/py.typed" in names
