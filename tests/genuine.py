"""Genuine Elixir Oban for the test suite: the harness in tests/genuine_oban, driven over a pipe.

`tests/genuine_oban/build` builds Elixir 1.18.4, Oban 2.23.1 and the harness from the vendored
sources into a cache outside the work tree (reused while its inputs are unchanged); `Harness`
starts one BEAM for the whole session and sends it one JSON request per line.

When the toolchain cannot be had, tests marked `genuine_oban` skip with one line saying why and
how to run them, unless `CINEGRAPH_OBAN_REQUIRE_GENUINE=1` (which `.ci/run` sets): then a
missing toolchain is an error, so CI can never pass by skipping them.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BUILD = Path(__file__).parent / "genuine_oban" / "build"
REQUIRE_VARIABLE = "CINEGRAPH_OBAN_REQUIRE_GENUINE"
MARKER = "@@harness "
HOW_TO_RUN = (
    "genuine Oban tests need Erlang/OTP 25+ with erlang-dev and the vendored sources "
    "(../shared/vendor/genuine-oban or CINEGRAPH_OBAN_GENUINE_VENDOR); "
    "run tests/genuine_oban/build --check to see what is missing"
)


class HarnessError(RuntimeError):
    """The harness answered a request with an Elixir error (its formatted exception)."""


class Unavailable(RuntimeError):
    """The toolchain or the vendored sources are not here."""


def required() -> bool:
    return os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0")


def build() -> Path:
    """Build (or reuse) the harness; its directory. Raises Unavailable saying what is missing."""
    try:
        result = subprocess.run([str(BUILD)], check=False, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as error:
        raise Unavailable(f"tests/genuine_oban/build did not finish within 900 s ({HOW_TO_RUN})") from error
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "cannot build" in line), lines[-1] if lines else "")
        raise Unavailable(f"{reason.removeprefix('genuine-oban: ')} ({HOW_TO_RUN})")
    return Path(result.stdout.strip().splitlines()[-1])


class Harness:
    """One running BEAM with Oban 2.23.1; `call(op, **fields)` sends one request."""

    def __init__(self, directory: Path) -> None:
        elixir_bin = (directory / ".elixir_bin").read_text().strip()
        env = dict(os.environ, PATH=f"{elixir_bin}:{os.environ.get('PATH', '')}")
        # Oban's own logs (warnings and errors), for reading when a test fails.
        self.log = directory / f"harness-{os.getpid()}.log"
        self._log = self.log.open("w")
        # One scheduler, which sleeps when it has nothing to do: the BEAM's default spins its
        # schedulers (one per core) after every burst of work, which took 3 to 4 CPU-seconds of
        # the genuine tests' 12 from the tests themselves, the server and the other worker.
        quiet = "+S 1 +sbwt none +sbwtdcpu none +sbwtdio none"
        self._process = subprocess.Popen(
            [
                f"{elixir_bin}/elixir",
                "--erl",
                quiet,
                "-pa",
                str(directory / "_build/prod/lib/*/ebin"),
                "-e",
                "Harness.main()",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
            cwd=directory,
        )
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next_id = 0
        self._lock = threading.Lock()
        try:
            ready = self._answers.get(timeout=60)
        except queue.Empty:
            ready = None
        if not ready or not ready.get("ready"):
            self.close()
            raise Unavailable(f"the harness did not start within 60 s ({ready!r}; its log: {self.log})")
        self.oban_version: str = ready["oban"]

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if line.startswith(MARKER):
                self._answers.put(json.loads(line[len(MARKER) :]))
        self._answers.put(None)

    def call(self, op: str, timeout: float = 60, **fields: Any) -> Any:
        with self._lock:
            self._next_id += 1
            request = {"id": self._next_id, "op": op, **fields}
            assert self._process.stdin is not None
            try:
                self._process.stdin.write(json.dumps(request) + "\n")
                self._process.stdin.flush()
            except OSError as error:  # the BEAM is gone (BrokenPipeError): say so, with its log
                raise HarnessError(f"{op}: the harness is not running ({error}; Oban's log: {self.log})") from None
            deadline = time.monotonic() + timeout
            while True:
                try:
                    answer = self._answers.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    # Its answer, when it comes, is dropped by the next call (an older id).
                    raise HarnessError(f"{op}: no answer within {timeout} s (Oban's log: {self.log})") from None
                if answer is None or answer.get("id", request["id"]) >= request["id"]:
                    break  # an answer to an earlier call that timed out is dropped
        if answer is None:
            raise HarnessError(f"the harness exited (status {self._process.wait(5)}) during {op}")
        if answer.get("id") != request["id"]:
            raise HarnessError(f"answer {answer!r} is not for request {request['id']}")
        if "error" in answer:
            raise HarnessError(f"{op}: {answer['error']} (Oban's log: {self.log})")
        return answer["ok"]

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._log.close()


def elixir_url(dsn: str) -> str:
    """The test database's URL in the ecto:// form Ecto's `url:` option reads."""
    return dsn.replace("postgresql://", "ecto://", 1)


class GenuineOban:
    """Genuine Oban against one test database: `migrate`, `insert`, `start`/`stop`, `engine`."""

    def __init__(self, harness: Harness, dsn: str) -> None:
        self.harness = harness
        self.dsn = dsn
        self.url = elixir_url(dsn)
        self._instances: list[str] = []

    def migrate(self, version: int, prefix: str = "public", direction: str = "up") -> None:
        self.harness.call("migrate", url=self.url, prefix=prefix, version=version, direction=direction)

    def start(
        self,
        name: str,
        prefix: str = "public",
        *,
        queues: dict[str, int] | None = None,
        plugins: dict[str, dict[str, Any]] | None = None,
        stage_interval: int = 1_000,
        leader: bool = True,
        node: str = "harness",
    ) -> str:
        self._instances.append(name)  # before the call: stopped at the end even if it times out
        self.harness.call(
            "start",
            name=name,
            url=self.url,
            prefix=prefix,
            queues=queues or {},
            plugins=plugins or {},
            stage_interval=stage_interval,
            leader=leader,
            node=node,
        )
        return name

    def stop(self, name: str) -> None:
        self.harness.call("stop", name=name)
        if name in self._instances:
            self._instances.remove(name)

    def insert(self, name: str, jobs: list[dict[str, Any]], *, mode: str = "insert") -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.harness.call("insert", name=name, jobs=jobs, mode=mode)
        return result

    def engine(self, name: str, fun: str, **fields: Any) -> Any:
        return self.harness.call("engine", name=name, fun=fun, **fields)

    def close(self) -> None:
        """Stop every instance this test started, then the repo, before the database is dropped;
        each is tried even when another fails, and the first failure is raised after."""
        failures: list[HarnessError] = []
        for name in list(self._instances):
            try:
                self.stop(name)
            except HarnessError as error:
                failures.append(error)
        try:
            self.harness.call("forget", url=self.url)
        except HarnessError as error:
            failures.append(error)
        if failures:
            raise failures[0]


def wait_for(condition: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll until `condition()` is truthy; its value, or AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s (last value {value!r})")
        time.sleep(interval)


def harness_session() -> Iterator[Harness]:
    """For the session fixture: build, start, yield, close."""
    harness = Harness(build())
    try:
        yield harness
    finally:
        harness.close()
