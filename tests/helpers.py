"""What the tests share: the names they use, and running `cinegraph-oban`.

`run_cli` runs the command line in this process through click's CliRunner: what nearly every
CLI test does, at no interpreter start-up per run. `run_script` runs the installed console
script as a real process, for the few tests where the process itself is the point: the entry
point starting, a process killed part-way, no traceback from a real interpreter. Both return a
`CliResult` and run without DATABASE_URL or the migration's crash switch from the caller's
environment.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from cinegraph_oban.migration.remove_tables import CRASH_VARIABLE

#: The Cinegraph worker every import job runs (named here as the tests spell it, not taken from
#: the library whose behaviour they check).
TMDB = "Cinegraph.Workers.TMDbDetailsWorker"

#: The installed console script (pyproject's [project.scripts]) beside this interpreter.
SCRIPT = Path(sys.executable).parent / "cinegraph-oban"
#: Variables of the caller's environment a run never sees unless the test gives them.
UNSET = ("DATABASE_URL", CRASH_VARIABLE)


@dataclass(frozen=True)
class CliResult:
    """How a run ended: its exit code (negative: killed by that signal) and what it printed."""

    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> CliResult:
    """`cinegraph-oban ARGS` in this process, with `env` added to the environment and `cwd` as
    the working directory for the run. Standard input is empty; stdout and stderr are captured
    apart (click 8.2+). An exception the CLI lets through ends the run as it would end the
    process: exit code 1 and the traceback on stderr."""
    from cinegraph_oban.cli import main

    if CRASH_VARIABLE in (env or {}):
        raise ValueError(f"{CRASH_VARIABLE} kills the process it is set in: use run_script")
    full_env: dict[str, str | None] = dict.fromkeys(UNSET)
    full_env.update(env or {})
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        result = CliRunner().invoke(main, list(args), env=full_env, prog_name="cinegraph-oban")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return CliResult(result.exit_code, result.stdout, stderr)


def run_script(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> CliResult:
    """`cinegraph-oban ARGS` as a real process of the installed console script."""
    full_env = {k: v for k, v in os.environ.items() if k not in UNSET}
    full_env.update(env or {})
    done = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=timeout, check=False, cwd=cwd
    )
    return CliResult(done.returncode, done.stdout, done.stderr)
