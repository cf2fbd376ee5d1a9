"""The built wheel carries every SQL template, so an installed package can run without the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_every_sql_template(tmp_path: Path) -> None:
    """Built by the backend pyproject names, installed beside the tests (the test extra): an
    isolated build would install it from the index first, each run. `.ci/compat` builds the
    wheel it installs in isolation."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
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


def test_the_query_builders_load_sqlalchemy_only_when_used() -> None:
    """Enqueueing code and the command line start without SQLAlchemy; every public name still
    imports from the package, lazily or not."""
    probe = (
        "import sys, cinegraph_oban\n"
        "assert 'sqlalchemy' not in sys.modules, 'imported at startup'\n"
        "import cinegraph_oban.cli\n"
        "assert 'sqlalchemy' not in sys.modules, 'imported by the CLI at startup'\n"
        "missing = [n for n in cinegraph_oban.__all__ if getattr(cinegraph_oban, n, None) is None]\n"
        "assert not missing, missing\n"
        "assert 'sqlalchemy' in sys.modules\n"
        "from cinegraph_oban import failed_lookups\n"
        "from cinegraph_oban.meta.queries import failed_lookups as direct\n"
        "assert failed_lookups is direct\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
