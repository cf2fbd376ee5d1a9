"""PgBouncer in front of the test server, for the tests of what a pooled connection does
(`pgbouncer` fixture in conftest.py, tests/db/test_pooler.py).

Three PgBouncers per session, started from Debian's `pgbouncer` package (`apt-get install
pgbouncer`, which `.ci/run` does), each passing every database of the test server through
under its own name: one per pool mode, transaction (`pool_mode = transaction`, what a
production PgBouncer in front of a Phoenix application usually runs), session and statement. They listen on
Unix sockets in a folder of their own (no TCP port another suite could take first), run as an
unprivileged account when we are root (PgBouncer refuses root), as the throwaway server does,
and end with the process that started them, even where it is killed.

Without the binary the tests skip with one line saying how to install it, unless
`CINEGRAPH_OBAN_REQUIRE_PGBOUNCER=1` (which `.ci/run` sets where it could install it): then a
missing PgBouncer is an error, so CI cannot pass by skipping them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from cinegraph_oban.db.throwaway import unprivileged_account

REQUIRE_VARIABLE = "CINEGRAPH_OBAN_REQUIRE_PGBOUNCER"
HOW_TO_INSTALL = "PgBouncer is not installed: `apt-get install pgbouncer` (Debian) puts it in /usr/sbin"
#: Server sessions per database and user, per pool mode: two in transaction mode, so that
#: clients are seen sharing them; in session mode one per client, and a migration has several.
POOL_SIZES = {"transaction": 2, "session": 10, "statement": 2}


class Unavailable(RuntimeError):
    """No PgBouncer binary here, or it would not start."""


def required() -> bool:
    return os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0")


def binary() -> str:
    found = shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if os.access(path, os.X_OK)), None
    )
    if found is None:
        raise Unavailable(HOW_TO_INSTALL)
    return found


MODES = ("transaction", "session", "statement")
#: The port in each PgBouncer's socket name (`.s.PGSQL.<port>`, in its own folder).
PORTS = {"transaction": 6432, "session": 6433, "statement": 6434}


@dataclass(frozen=True)
class PgBouncer:
    #: The folder holding every PgBouncer's socket.
    host: str
    user: str

    def url(self, dbname: str, *, mode: str = "transaction") -> str:
        """A URL for the test server's database `dbname` through the PgBouncer of pool `mode`."""
        return f"postgresql://{self.user}@/{dbname}?host={self.host}&port={PORTS[mode]}"

    def forget(self, dbname: str) -> None:
        """Close every PgBouncer's client and server connections to `dbname` (its admin
        console's KILL), as the test that used it ends: the database is renewed or dropped
        next, which ends its sessions behind PgBouncer's back, and a pool that had not yet
        seen them end could hand a dead one to the next test given a database of that name."""
        for mode in MODES:
            with (
                psycopg.connect(self.url("pgbouncer", mode=mode), autocommit=True) as admin,
                contextlib.suppress(psycopg.Error),  # no pool of that name: nothing to close
            ):
                admin.execute(f'KILL "{dbname}"'.encode(), prepare=False)
                admin.execute(f'RESUME "{dbname}"'.encode(), prepare=False)  # KILL leaves it paused


def _account() -> pwd.struct_passwd | None:
    """Who runs PgBouncer: the throwaway server's account (`unprivileged_account`)."""
    try:
        return unprivileged_account()
    except LookupError as error:
        raise Unavailable(f"{error} to run PgBouncer as") from None


def _config(server: Any, mode: str, folder: Path) -> str:
    target = f"host={server.host} port={server.port} user={server.user}"
    password = getattr(server, "password", None)
    if password:
        target += f" password={password}"
    return "\n".join(
        [
            "[databases]",
            f"* = {target}",
            "[pgbouncer]",
            "listen_addr =",
            f"unix_socket_dir = {folder}",
            f"listen_port = {PORTS[mode]}",
            "auth_type = trust",
            f"admin_users = {server.user}",
            "query_wait_timeout = 20",
            f"auth_file = {folder / 'users.txt'}",
            f"pool_mode = {mode}",
            f"default_pool_size = {POOL_SIZES[mode]}",
            "max_client_conn = 200",
            "server_idle_timeout = 5",
            "ignore_startup_parameters = extra_float_digits,options",  # the suite's PGOPTIONS
            f"logfile = {folder / mode}.log",
            f"pidfile = {folder / mode}.pid",
            "",
        ]
    )


def _command(executable: str, ini: Path) -> list[str]:
    """PgBouncer's command line: under `setpriv --pdeathsig TERM` where util-linux has it, so
    that it ends with the process that started it, even where that one is killed (set in the
    child after its change of account, which would clear it)."""
    setpriv = shutil.which("setpriv")
    wrapper = [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []
    return [*wrapper, executable, "-q", str(ini)]


@contextlib.contextmanager
def running(server: Any) -> Iterator[PgBouncer]:
    """The PgBouncers in front of `server` (host, port, user of the test server) until the block ends."""
    executable = binary()
    account = _account()
    folder = Path(tempfile.mkdtemp(prefix="cinegraph-oban-pgbouncer-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        (folder / "users.txt").write_text(f'"{server.user}" ""\n')
        for mode in MODES:
            (folder / f"{mode}.ini").write_text(_config(server, mode, folder))
        if account is not None:
            for path in [folder, *folder.iterdir()]:
                os.chown(path, account.pw_uid, account.pw_gid)
        for mode in MODES:
            # The account is changed by subprocess in the child, before exec (PgBouncer refuses root).
            switch: dict[str, Any] = (
                {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []} if account is not None else {}
            )
            with open(folder / f"{mode}.stderr", "wb") as stderr:
                processes.append(
                    subprocess.Popen(
                        _command(executable, folder / f"{mode}.ini"),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                        **switch,
                    )
                )
        bouncer = PgBouncer(str(folder), server.user)
        for mode, process in zip(MODES, processes, strict=True):
            _wait_until_up(bouncer, mode, process, folder)
        yield bouncer
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_until_up(bouncer: PgBouncer, mode: str, process: subprocess.Popen[bytes], folder: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            psycopg.connect(bouncer.url("postgres", mode=mode), connect_timeout=2).close()
            return
        except psycopg.OperationalError as error:
            if process.poll() is not None or time.monotonic() > deadline:
                said = [
                    path.read_text(errors="replace")[-400:].strip()
                    for path in (folder / f"{mode}.stderr", folder / f"{mode}.log")
                    if path.exists()
                ]
                raise Unavailable(f"PgBouncer ({mode} mode) did not start: {error} {' '.join(said)}") from error
            time.sleep(0.05)
