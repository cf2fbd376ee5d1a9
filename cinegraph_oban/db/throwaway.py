"""A throwaway local PostgreSQL server, for the demo and for tests when no database is given.

The server binaries are taken from the PATH or from the usual `/usr/lib/postgresql/<n>/bin`
(newest first). The cluster lives in a temporary directory, listens on 127.0.0.1 on a free port
(and a socket inside that directory), trusts local connections, runs without fsync, and is
removed on exit. `initdb` and `pg_ctl` refuse to run as root, so under root the server runs as an
unprivileged user (`postgres` when it exists, else `nobody`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cinegraph_oban.errors import DatabaseUnavailableError

__all__ = ["LocalServer", "find_server_binaries", "local_server"]

_SEARCH_GLOB = "/usr/lib/postgresql/*/bin"


def _version_key(path: Path) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in path.parent.name.split("."))
    except ValueError:
        return (0,)


def find_server_binaries() -> Path:
    """The directory holding `initdb` and `pg_ctl`."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = sorted(
        (p for p in Path("/").glob(_SEARCH_GLOB.lstrip("/")) if (p / "initdb").exists() and (p / "pg_ctl").exists()),
        key=_version_key,
        reverse=True,
    )
    if not candidates:
        raise DatabaseUnavailableError(
            "no PostgreSQL server binaries found (initdb and pg_ctl, on the PATH or in "
            f"{_SEARCH_GLOB}); install the PostgreSQL server (e.g. `apt install postgresql`) or "
            "pass --database-url / set DATABASE_URL to use an existing database"
        )
    return candidates[0]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Who a server started as root runs as: the first of these accounts that exists.
UNPRIVILEGED_ACCOUNTS = ("postgres", "nobody")


def unprivileged_account() -> pwd.struct_passwd | None:
    """Who a server we start runs as (initdb, pg_ctl and PgBouncer refuse root): ourselves
    (None), or when we are root the first of UNPRIVILEGED_ACCOUNTS that exists; LookupError
    where none does."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_ACCOUNTS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise LookupError(f"running as root, and none of the accounts {', '.join(UNPRIVILEGED_ACCOUNTS)} exists")


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the throwaway server (`unprivileged_account`)."""
    try:
        return unprivileged_account()
    except LookupError:
        raise DatabaseUnavailableError(
            "running as root, and neither a 'postgres' nor a 'nobody' account exists to run the "
            "throwaway PostgreSQL server; create an unprivileged user or pass --database-url"
        ) from None


@dataclass(frozen=True, slots=True)
class LocalServer:
    """A running throwaway server."""

    host: str
    port: int
    user: str
    socket_dir: Path

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"


def _run(args: list[str], account: pwd.struct_passwd | None, cwd: Path, what: str) -> None:
    kwargs: dict[str, object] = {}
    if account is not None:
        kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit {result.returncode}"
        raise DatabaseUnavailableError(
            f"could not {what} a throwaway PostgreSQL server: {detail}"
            "; pass --database-url / set DATABASE_URL to use an existing database instead"
        )


@contextlib.contextmanager
def local_server() -> Iterator[LocalServer]:
    """Start a throwaway server, yield it, and stop and remove it afterwards."""
    bindir = find_server_binaries()
    account = _server_user()
    root = Path(tempfile.mkdtemp(prefix="cinegraph-oban-pg-"))
    data = root / "data"
    log = root / "server.log"
    try:
        if account is not None:
            os.chown(root, account.pw_uid, account.pw_gid)
        _run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            account,
            root,
            "initialise",
        )
        port = _free_port()
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
        _run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
            account,
            root,
            "start",
        )
        try:
            yield LocalServer(host="127.0.0.1", port=port, user="postgres", socket_dir=root)
        finally:
            with contextlib.suppress(DatabaseUnavailableError):
                _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], account, root, "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
