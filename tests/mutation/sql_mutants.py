"""Mutation testing for the migration's SQL templates (mutmut cannot mutate Jinja templates).

    .venv/bin/python tests/mutation/sql_mutants.py            # every mutant
    .venv/bin/python tests/mutation/sql_mutants.py --list     # only list the mutants
    .venv/bin/python tests/mutation/sql_mutants.py --only backfill --only verify.sql

The repository is copied to a temporary directory; the copy's package, conftest and templates
are the ones imported (`sys.path` and `PYTHONPATH` point at the copy, so the CLI subprocesses
of the crash tests use it too). Each mutant (one small change to one template) is written into
the copy and the migration tests run against it in a forked child (`-x`, hypothesis profile
`mutation`, the database from conftest.py). A mutant is killed when a test fails, whether the
change makes the template fail to render, produces invalid SQL or changes what the SQL does.

A baseline run of the unmutated copy records which templates each test renders (in process,
and in subprocesses through a `sitecustomize.py` placed in the copy for that run only); a mutant
runs only the tests that render its template, in the order of SELECTION (quick, broad ones
first). This file is not a test module (pytest collects `test_*.py` only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_GLOBS = ("migration/*.sql.j2", "legacy/create_*.sql.j2", "legacy/insert_*.sql.j2")
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "mutants", ".hypothesis", "__pycache__", ".mypy_cache", ".ruff_cache", "bench", "dist", "build"
)

_M = "tests/migration/test_migration.py::"
#: The tests a mutant may run, targeted and quick ones first (with -x the first failure ends the
#: run). The slow property, crash and pytester tests of test_migration.py are left out: a
#: surviving mutant runs every selected test, and these add ~10 s per survivor for no extra kills
#: (pass --tests to choose others).
SELECTION = [
    "tests/migration/test_migration_mutations.py",
    _M + "test_up_then_down_restores_both_tables_exactly[v14-public]",
    _M + "test_up_then_down_restores_both_tables_exactly[v14-cinegraph_jobs]",
    _M + "test_verify_names_differences_and_nothing_is_dropped",
    _M + "test_down_refuses_a_partial_set_and_restores_from_the_export",
    _M + "test_compat_views_and_audit_log",
    _M + "test_a_second_migrator_is_refused",
    _M + "test_a_different_shape_is_refused_with_a_diff",
    _M + "test_rows_written_during_up_are_archived_and_rerun_is_a_no_op",
    _M + "test_plan_is_deterministic_and_touches_nothing",
]

#: Mutants that cannot change behaviour, by id, with the reason (reported apart from survivors).
EQUIVALENT: dict[str, str] = {
    "migration/legacy_columns.sql.j2:10:72:string-key": "relkind is \"char\": the literal 'r_x' is cut to 'r'",
    "migration/legacy_stats.sql.j2:4:26:number+1": "last_id of legacy_stats is read by no caller",
    "migration/backfill.sql.j2:32:1:drop-order-by-line": "the batch CTE is already ordered by id; it is read in order",
    "migration/legacy_stats.sql.j2:5:31:jinja-drop-call-argument": "Ecto keeps updated_at >= inserted_at",
    "migration/legacy_columns.sql.j2:9:37:eq->ne": "preflight compares type and NOT NULL only, never the default",
    "migration/verify_export.sql.j2:39:62:number+1": "the export's findings are merged over chunks and cut to 20 in Python",
    "migration/verify_export.sql.j2:34:75:number+1": "the select list of an EXISTS subquery is ignored (SELECT 2)",
    "migration/verify_export.sql.j2:31:1:drop-and-line": "only narrows the archival jobs read to the chunk's ids; "
    "findings start from the exported rows, so jobs of other ids never join",
    "migration/verify_export.sql.j2:31:40:eq->ne": "the same: <> ANY(ids) keeps every job when the chunk has 2+ ids",
    "migration/backfill.sql.j2:33:13:number+1": "RETURNING 2 instead of 1: only the rows are counted",
    "migration/legacy_columns.sql.j2:9:50:and->or": "preflight compares type and NOT NULL only, never the default",
    "migration/legacy_columns.sql.j2:9:62:eq->ne": "preflight compares type and NOT NULL only, never the default",
    "migration/legacy_columns.sql.j2:11:16:gt->ge": "no attribute has attnum 0 (system columns are negative)",
    "migration/legacy_stats.sql.j2:4:17:max->min": "last_id of legacy_stats is read by no caller",
    "migration/verify_export.sql.j2:42:1:drop-order-by-line": "Python sorts the findings by kind after merging chunks",
}

#: Mutants that only change the order of rows no caller depends on: the rows are the same, and
#: PostgreSQL happens to return them in the same order; no test can tell reliably.
ORDER_ONLY: dict[str, str] = {
    "migration/legacy_columns.sql.j2:12:1:drop-order-by-line": "preflight reads the columns into a dict by name",
    "migration/restore_from_jobs.sql.j2:8:1:drop-order-by-line": "insertion order; the rows and ids are the same",
    "migration/restore_from_export.sql.j2:22:1:drop-order-by-line": "insertion order; the rows and ids are the same",
    "migration/representable.sql.j2:27:1:drop-order-by-line": "one row per kind; GROUP BY already sorts them",
    "migration/verify_export.sql.j2:39:45:drop-aggregate-order": "array_agg over rows already in id order",
}

RECORD_VARIABLE = "SQL_MUTANTS_RECORD"
SITECUSTOMIZE = f"""
import os
import jinja2

_get_source = jinja2.FileSystemLoader.get_source


def _recording_get_source(self, environment, template):
    path = os.environ.get({RECORD_VARIABLE!r})
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(template + "\\n")
    return _get_source(self, environment, template)


jinja2.FileSystemLoader.get_source = _recording_get_source
"""


# Mutants


@dataclass(frozen=True)
class Mutant:
    """One change to one template: `text[start:end]` becomes `replacement`."""

    path: str
    start: int
    end: int
    original: str
    replacement: str
    operator: str
    line: int
    column: int

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}:{self.column}:{self.operator}"

    def apply(self, text: str) -> str:
        return text[: self.start] + self.replacement + text[self.end :]

    def describe(self) -> str:
        return f"{self.id}: {_short(self.original)!r} -> {_short(self.replacement)!r}"


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class _Region:
    kind: str  # "sql" (code), "string" (an SQL string literal), "jinja" ({{ }} and {% %})
    start: int
    end: int


_JINJA = re.compile(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", re.S)
_SQL_STRING = re.compile(r"'(?:[^']|'')*'")


def _regions(text: str) -> list[_Region]:
    regions: list[_Region] = []

    def sql(start: int, end: int) -> None:
        pos = start
        for match in _SQL_STRING.finditer(text, start, end):
            regions.append(_Region("sql", pos, match.start()))
            regions.append(_Region("string", match.start(), match.end()))
            pos = match.end()
        regions.append(_Region("sql", pos, end))

    pos = 0
    for match in _JINJA.finditer(text):
        sql(pos, match.start())
        if not match.group().startswith("{#"):
            regions.append(_Region("jinja", match.start(), match.end()))
        pos = match.end()
    sql(pos, len(text))
    return [r for r in regions if r.end > r.start]


Replacement = str | Callable[[re.Match[str]], str | None]

#: (name, region kind, pattern, replacement): each match in a region of that kind is one mutant.
OPERATORS: list[tuple[str, str, str, Replacement]] = [
    ("ge->gt", "sql", r">=", ">"),
    ("le->lt", "sql", r"<=", "<"),
    ("gt->ge", "sql", r"(?<![-=@>])>(?![=>])", ">="),
    ("lt->le", "sql", r"(?<![<@])<(?![=>@<])", "<="),
    ("ne->eq", "sql", r"<>", "="),
    ("eq->ne", "sql", r"(?<![<>=!:])=(?![=>])", "<>"),
    ("is-not-distinct->is-distinct", "sql", r"IS NOT DISTINCT FROM", "IS DISTINCT FROM"),
    ("is-distinct->is-not-distinct", "sql", r"IS DISTINCT FROM", "IS NOT DISTINCT FROM"),
    ("is-not-null->is-null", "sql", r"IS NOT NULL", "IS NULL"),
    ("is-null->is-not-null", "sql", r"IS NULL", "IS NOT NULL"),
    ("and->or", "sql", r"\bAND\b", "OR"),
    ("or->and", "sql", r"\bOR\b", "AND"),
    ("not-exists->exists", "sql", r"\bNOT EXISTS\b", "EXISTS"),
    ("exists->not-exists", "sql", r"(?<!NOT )\bEXISTS\b", "NOT EXISTS"),
    ("drop-not", "sql", r"(?<!IS )\bNOT\s+(?!EXISTS\b|DISTINCT\b)", ""),
    ("count+1", "sql", r"count\(\*\)", "count(*) + 1"),
    ("max->min", "sql", r"\bmax\(", "min("),
    ("min->max", "sql", r"\bmin\(", "max("),
    ("greatest->least", "sql", r"\bgreatest\(", "least("),
    ("least->greatest", "sql", r"\bleast\(", "greatest("),
    ("number+1", "sql", r"(?<![\w$.%])\d+(?![\w.])", lambda m: str(int(m.group()) + 1)),
    ("timestamp(0)->timestamp", "sql", r"::timestamp\(0\)", "::timestamp"),
    ("timestamp->timestamp(0)", "sql", r"::timestamp(?![(\w])", "::timestamp(0)"),
    ("drop-aggregate-order", "sql", r"\s+ORDER BY [\w.]+(?=\))", ""),
    ("discarded<->completed", "string", r"'(discarded|completed)'", lambda m: _swap_state(m.group())),
    (
        "string-key",
        "string",
        r"^'([a-z_][a-z0-9_]*)'$",
        lambda m: None if m.group(1) in _STATES else f"'{m.group(1)}_x'",
    ),
    ("json-key", "string", r'(?<=[{\[,:])"(\w+)"', lambda m: f'"{m.group(1)}_x"'),
    ("jsonb-empty-swap", "string", r"^'(\{\}|\[\])'$", lambda m: "'[]'" if m.group() == "'{}'" else "'{}'"),
    ("drop-microseconds", "string", r"SS\.US", "SS"),
    ("add-microseconds", "string", r'SS(?="Z")', "SS.US"),
    ("date+1", "string", r"(?<=')\d{4,5}(?=-\d\d-\d\d)", lambda m: str(int(m.group()) + 1).zfill(len(m.group()))),
    ("jinja-eq->ne", "jinja", r"==", "!="),
    ("jinja-discarded<->completed", "jinja", r"'(discarded|completed)(_at)?'", lambda m: _swap_state(m.group())),
    ("jinja-drop-list-item", "jinja", r"'\w+',\s*(?=[^\[\]]*\])", ""),
    ("jinja-drop-call-argument", "jinja", r"(?<=\()\w+, (?=\w+\)')|, \w+(?=\)')", ""),
]
_STATES = ("discarded", "completed")


def _swap_state(text: str) -> str:
    return text.replace("discarded", "\0").replace("completed", "discarded").replace("\0", "completed")


#: Whole-line mutants: (name, pattern on the stripped line, replacement for the line or None to drop it).
LINE_OPERATORS: list[tuple[str, str, str | None]] = [
    ("where->true", r"^WHERE\s+(?!true$).+$", "WHERE true"),
    ("drop-and-line", r"^AND\s.+$", None),
    ("drop-order-by-line", r"^ORDER BY\s.+$", None),
    ("drop-limit-line", r"^LIMIT\s.+$", None),
    ("drop-group-by-line", r"^GROUP BY\s.+$", None),
    ("drop-on-conflict-line", r"^ON CONFLICT\s.+$", None),
    ("drop-jsonb-pair", r"^'\w+', .+,$", None),
]
#: Raw-text mutants (across regions): dropping one column of the ROW(...) that verify compares.
RAW_OPERATORS: list[tuple[str, str, str]] = [
    ("drop-row-column", r"\{\{ side \}\}\.\w+(?:::\w+)?,\s*", ""),
]


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def mutants_of(path: str, text: str) -> list[Mutant]:
    found: list[Mutant] = []

    def add(start: int, end: int, replacement: str, operator: str) -> None:
        if text[start:end] == replacement:
            return
        line, column = _line_col(text, start)
        found.append(Mutant(path, start, end, text[start:end], replacement, operator, line, column))

    regions = _regions(text)
    for name, kind, pattern, replacement in OPERATORS:
        compiled = re.compile(pattern)
        for region in regions:
            if region.kind != kind:
                continue
            if kind == "string" and pattern.startswith("^"):
                match = compiled.search(text[region.start : region.end])
                matches = [(region.start + match.start(), region.start + match.end(), match)] if match else []
            else:
                matches = [(m.start(), m.end(), m) for m in compiled.finditer(text, region.start, region.end)]
            for start, end, match in matches:
                new = replacement if isinstance(replacement, str) else replacement(match)
                if new is not None:
                    add(start, end, new, name)
    code = [r for r in regions if r.kind != "jinja"]  # lines in Jinja comments are not mutated
    offset = 0
    for raw_line in text.splitlines(keepends=True):
        stripped = raw_line.strip()
        lead = len(raw_line) - len(raw_line.lstrip())
        in_code = any(r.start <= offset + lead < r.end and r.kind == "sql" for r in code)
        for name, pattern, line_replacement in LINE_OPERATORS if in_code else []:
            if re.match(pattern, stripped):
                if line_replacement is None:
                    add(offset, offset + len(raw_line), "", name)
                else:
                    add(offset + lead, offset + lead + len(stripped), line_replacement, name)
        offset += len(raw_line)
    for name, pattern, raw_replacement in RAW_OPERATORS:
        for match in re.finditer(pattern, text):
            add(match.start(), match.end(), raw_replacement, name)
    seen: set[str] = set()
    unique: list[Mutant] = []
    for mutant in sorted(found, key=lambda m: (m.start, m.operator)):
        key = mutant.apply(text)
        if key not in seen:  # two operators making the same text are one mutant
            seen.add(key)
            unique.append(mutant)
    return unique


def all_mutants(templates: Path) -> list[Mutant]:
    mutants: list[Mutant] = []
    for pattern in TEMPLATE_GLOBS:
        for file in sorted(templates.glob(pattern)):
            mutants += mutants_of(file.relative_to(templates).as_posix(), file.read_text(encoding="utf-8"))
    return mutants


# Running the tests in a forked child


@dataclass
class Baseline:
    seconds: dict[str, float]
    templates: dict[str, set[str]]


class _Recorder:
    """pytest plugin for the baseline: each test's duration and the templates it loaded."""

    def __init__(self, record_dir: Path, loaded: set[str]) -> None:
        self.record_dir = record_dir
        self.loaded = loaded
        self.seconds: dict[str, float] = {}
        self.templates: dict[str, list[str]] = {}
        self._started = 0.0

    def _file(self, nodeid: str) -> Path:
        return self.record_dir / (re.sub(r"\W", "_", nodeid) + ".txt")

    def pytest_runtest_setup(self, item: Any) -> None:
        _clear_template_caches()
        self.loaded.clear()
        os.environ[RECORD_VARIABLE] = str(self._file(item.nodeid))
        self._started = time.perf_counter()

    def pytest_runtest_teardown(self, item: Any) -> None:
        self.seconds[item.nodeid] = time.perf_counter() - self._started
        file = self._file(item.nodeid)
        sub = set(file.read_text(encoding="utf-8").split()) if file.exists() else set()
        self.templates[item.nodeid] = sorted(self.loaded | sub)
        os.environ.pop(RECORD_VARIABLE, None)


def _clear_template_caches() -> None:
    from cinegraph_oban.sql import templates

    templates._render_cached.cache_clear()
    templates._environment.cache_clear()
    templates.template_root.cache_clear()


def _pytest_args(tests: list[str]) -> list[str]:
    return ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]


def _in_child(work: Callable[[], int], log: Path, timeout: float) -> tuple[str, int]:
    """Run `work` in a forked child (its own process group); ('exit', code) or ('timeout', -1)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child
        code = 70
        try:
            os.setpgid(0, 0)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            _clear_template_caches()
            code = work()
        except BaseException:  # report anything as a failure of the child
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(code))
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "exit", os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", -1
        time.sleep(0.02)


def _drop_session_databases() -> None:
    """Databases a killed child left behind (conftest names them after this process's pid)."""
    import psycopg

    prefix = f"cinegraph_oban_tests_{os.getpid()}"
    dsn = os.environ.get("CINEGRAPH_OBAN_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    with psycopg.connect(dsn, autocommit=True) as conn:
        names = conn.execute(
            "SELECT datname FROM pg_database WHERE left(datname, length(%s)) = %s", (prefix, prefix)
        ).fetchall()
        for (name,) in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def run_baseline(copy: Path, workdir: Path, tests: list[str]) -> Baseline:
    import jinja2
    import pytest

    record_dir = workdir / "record"
    record_dir.mkdir()
    out = workdir / "baseline.json"
    (copy / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")

    def work() -> int:
        loaded: set[str] = set()
        original = jinja2.FileSystemLoader.get_source

        def get_source(self: jinja2.FileSystemLoader, environment: jinja2.Environment, template: str) -> Any:
            loaded.add(template)
            return original(self, environment, template)

        jinja2.FileSystemLoader.get_source = get_source  # type: ignore[method-assign]
        recorder = _Recorder(record_dir, loaded)
        code = int(pytest.main(_pytest_args(tests), plugins=[recorder]))
        out.write_text(json.dumps({"seconds": recorder.seconds, "templates": recorder.templates}), encoding="utf-8")
        return code

    try:
        how, code = _in_child(work, workdir / "baseline.log", timeout=900)
    finally:
        (copy / "sitecustomize.py").unlink()
    if how != "exit" or code != 0:
        print((workdir / "baseline.log").read_text(encoding="utf-8")[-5000:])
        raise SystemExit(f"the unmutated templates do not pass the selection ({how}, exit {code}); fix that first")
    data = json.loads(out.read_text(encoding="utf-8"))
    return Baseline(seconds=data["seconds"], templates={k: set(v) for k, v in data["templates"].items()})


def _tests_for(mutant: Mutant, baseline: Baseline, tests: list[str]) -> list[str]:
    nodeids = list(baseline.templates)  # in run order
    chosen: list[str] = []
    for selected in tests:
        for nodeid in nodeids:
            wanted = nodeid == selected or nodeid.startswith(selected + "::")
            if wanted and mutant.path in baseline.templates[nodeid] and nodeid not in chosen:
                chosen.append(nodeid)
    return chosen


def _first_failure(log: Path) -> str:
    """The first failing test of a child's run, as pytest's short summary names it."""
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return "  <- " + _short(line.split(" - ")[0], 120)
    return ""


@contextlib.contextmanager
def _mutated(file: Path, text: str) -> Iterator[None]:
    original = file.read_text(encoding="utf-8")
    file.write_text(text, encoding="utf-8")
    try:
        yield
    finally:
        file.write_text(original, encoding="utf-8")


# The command


def _prepare_copy(workdir: Path) -> Path:
    copy = workdir / "repo"
    shutil.copytree(REPO, copy, ignore=COPY_IGNORE)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ.setdefault("HYPOTHESIS_PROFILE", "mutation")
    sys.path.insert(0, str(copy))
    os.chdir(copy)
    import cinegraph_oban

    if Path(cinegraph_oban.__file__).resolve().parent != copy / "cinegraph_oban":
        raise SystemExit(f"cinegraph_oban was imported from {cinegraph_oban.__file__}, not from the copy")
    return copy


def _warm_up(tests: list[str], workdir: Path) -> None:
    """Import pytest, the plugins, conftest and the test modules once, so each child starts warm."""
    import pytest

    with open(workdir / "warmup.log", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        pytest.main(["--collect-only", "-qq", "-p", "no:cacheprovider", *tests])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", action="append", default=[], help="only mutants whose id contains this (repeatable)")
    parser.add_argument("--tests", nargs="+", default=SELECTION, help="the test selection (node ids)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy and the logs")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--shuffle", type=int, metavar="SEED", help="run the mutants in a random order (a fair sample)")
    args = parser.parse_args(argv)

    mutants = all_mutants(REPO / "sql_templates")
    if args.only:
        mutants = [m for m in mutants if any(part in m.id for part in args.only)]
    if args.shuffle is not None:
        random.Random(args.shuffle).shuffle(mutants)
    if args.list:
        for mutant in mutants:
            print(mutant.describe())
        print(f"{len(mutants)} mutants")
        return 0

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="sql-mutants-"))
    results: dict[str, list[Mutant]] = {"killed": [], "timeout": [], "survived": [], "equivalent": [], "untested": []}
    try:
        copy = _prepare_copy(workdir)
        args.tests = [t for t in args.tests if (copy / t.split("::")[0]).exists()]
        _warm_up(args.tests, workdir)
        baseline = run_baseline(copy, workdir, args.tests)
        print(f"baseline: {len(baseline.seconds)} tests pass in {sum(baseline.seconds.values()):.1f}s")
        print(f"{len(mutants)} mutants")
        for n, mutant in enumerate(mutants, start=1):
            tests = _tests_for(mutant, baseline, args.tests)
            begun = time.monotonic()
            detail = ""
            if not tests:
                status = "untested"
            else:
                file = copy / "sql_templates" / mutant.path
                timeout = 30 + 3 * sum(baseline.seconds[t] for t in tests)
                work: Callable[[], int] = lambda tests=tests: int(__import__("pytest").main(_pytest_args(tests)))  # noqa: E731
                with _mutated(file, mutant.apply(file.read_text(encoding="utf-8"))):
                    how, code = _in_child(work, workdir / "mutant.log", timeout)
                if how == "timeout":
                    status = "timeout"
                    _drop_session_databases()
                elif code == 0:
                    status = "equivalent" if mutant.id in EQUIVALENT else "survived"
                else:
                    status = "killed"
                    detail = _first_failure(workdir / "mutant.log")
            results[status].append(mutant)
            print(
                f"[{n}/{len(mutants)}] {status:10} {time.monotonic() - begun:5.1f}s {mutant.describe()}{detail}",
                flush=True,
            )
    finally:
        os.chdir(REPO)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")

    total = len(mutants)
    killed = len(results["killed"]) + len(results["timeout"])
    print()
    for status in ("survived", "untested", "equivalent"):
        for mutant in results[status]:
            reason = f"  ({EQUIVALENT[mutant.id]})" if status == "equivalent" else ""
            if mutant.id in ORDER_ONLY:
                reason = f"  (order only, counted as a survivor: {ORDER_ONLY[mutant.id]})"
            print(f"{status}: {mutant.describe()}{reason}")
    print()
    print(
        f"{total} mutants: {killed} killed ({len(results['timeout'])} of them by timeout), "
        f"{len(results['survived'])} survived, {len(results['equivalent'])} equivalent, "
        f"{len(results['untested'])} not reached by any selected test"
    )
    if total:
        print(f"score: {killed}/{total} = {100 * killed / total:.1f}% of all mutants", end="")
        testable = total - len(results["equivalent"])
        print(f"; {killed}/{testable} = {100 * killed / max(testable, 1):.1f}% of non-equivalent ones")
    print(f"runtime: {time.monotonic() - started:.0f}s")
    if args.json:
        args.json.write_text(
            json.dumps({k: [m.describe() for m in v] for k, v in results.items()}, indent=2) + "\n", encoding="utf-8"
        )
    return 0 if not results["survived"] and not results["untested"] else 1


if __name__ == "__main__":
    sys.exit(main())
