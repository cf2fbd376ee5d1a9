#!/usr/bin/env python3
"""Generate the sync face of cinegraph-oban from its asyncio source (psycopg's way of keeping
`Connection` and `AsyncConnection` in step: one hand-written source, the other face generated).

    python tools/async_to_sync.py            rewrite every generated module
    python tools/async_to_sync.py --check    exit 1 if a generated module is not current (CI)

The source of each pair is a `*_async.py` module beside its sync twin, in the folder of its
concern (`insert/client_async.py` -> `insert/client.py`, as psycopg_pool's `pool_async.py` ->
`pool.py`); it is the code to read and edit, and the sync module carries a header saying so.
The transformation works on tokens, so comments and layout survive:
- a block `if True:  # ASYNC` keeps its body in the asyncio face and becomes its `else:` body in
  the sync one, for the few lines where the two faces differ in more than `await` (as in
  psycopg's sources);
- `async def` / `async with` / `async for` lose `async`; `await` is dropped;
- names are mapped (`AsyncConnection` -> `Connection`, `to_async_psycopg` -> `to_psycopg`, ...);
- `*_async` modules are named by their sync twins (`cinegraph_oban.insert.prepared_async` ->
  `cinegraph_oban.insert.prepared`), `cinegraph_oban.asyncio` by `cinegraph_oban`;
- per module, phrases of prose (docstrings) are replaced where the two faces say different things.
The result is formatted with ruff, as the rest of the tree.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Async name -> sync name, applied to every NAME token (identifiers and attributes alike).
NAMES: dict[str, str] = {
    "AsyncConnection": "Connection",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncCursor": "Cursor",
    "AsyncIterator": "Iterator",
    "AsyncIterable": "Iterable",
    "AsyncGenerator": "Generator",
    "AsyncOban": "Oban",
    "AsyncQueuedLibpqWriter": "QueuedLibpqWriter",
    "anext": "next",
    "asynccontextmanager": "contextmanager",
    "async_connection_lock": "connection_lock",
    "async_connect": "connect",
    "async_atomic": "atomic",
    "to_async_psycopg": "to_psycopg",
    "aclose": "close",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
}

#: Prose (docstrings, messages) where the two faces say different things: asyncio -> sync,
#: applied to every module. A phrase listed for a module must be in its source.
PHRASES: list[tuple[str, str]] = [
    (
        "a psycopg AsyncConnection, a SQLAlchemy AsyncConnection or AsyncSession",
        "a psycopg connection, a SQLAlchemy Connection or Session",
    ),
    ("A sync connection is refused at once", "An asyncio connection is refused at once"),
    ("a sync connection is refused at once", "an asyncio connection is refused at once"),
    ("async for ", "for "),
    ("AsyncConnectionPool", "ConnectionPool"),
    ("AsyncOban", "Oban"),
    ("await ", ""),
    ("cinegraph_oban.asyncio.testing", "cinegraph_oban.testing"),
]

#: source (under cinegraph_oban/; its sync twin drops `_async`) -> [(asyncio phrase, sync phrase)].
MODULES: dict[str, list[tuple[str, str]]] = {
    "insert/client_async.py": [
        (
            "The client: enqueue Oban jobs from Python with psycopg 3, on asyncio connections.",
            "The client: enqueue Oban jobs from Python with psycopg 3.",
        ),
        (
            "This is the source of both faces: `cinegraph_oban/insert/client.py` (`Oban`, for threads) is generated\n"
            "from it by tools/async_to_sync.py.",
            "Generated from the asyncio source, `cinegraph_oban/insert/client_async.py`, by\ntools/async_to_sync.py.",
        ),
        ("every task of a process", "every thread of a process"),
        ("so two tasks never", "so two threads never"),
        ("safe to share between tasks", "safe to share between threads"),
        ("use `async with oban.pool.connection()", "use `with oban.pool.connection()"),
    ],
    "oban/engine_async.py": [],
    "oban/health_async.py": [],
    "oban/installation_async.py": [],
    "meta/outcomes_async.py": [],
    "insert/prepared_async.py": [("(so Ctrl-C, or a cancelled task, still", "(so Ctrl-C still")],
    "meta/readers_async.py": [],
    "testing/assertions_async.py": [],
    "migration/legacy_async.py": [
        (
            "This is the asyncio\nsource; `legacy.py` (the sync face) is generated from it by tools/async_to_sync.py.",
            "Generated from the\nasyncio source, `legacy_async.py`, by tools/async_to_sync.py.",
        )
    ],
}

#: ... and every generated module's source, by its name: `prepared_async` -> `prepared`.
NAMES.update({Path(source).stem: Path(source).stem.removesuffix("_async") for source in MODULES})

HEADER = (
    "# Generated from cinegraph_oban/{source} by tools/async_to_sync.py: do not edit.\n"
    "# Edit the asyncio source and run `python tools/async_to_sync.py` (CI checks it is current).\n"
)


def _tokens(text: str) -> list[tuple[tokenize.TokenInfo, int, int]]:
    """Python's tokens of `text`, each with its start and end as offsets into `text`. Lines are
    counted as tokenize counts them (split at newlines only, not at form feeds or U+2028)."""
    starts = [0]
    for line in io.StringIO(text).readlines():
        starts.append(starts[-1] + len(line))
    return [
        (token, starts[token.start[0] - 1] + token.start[1], starts[token.end[0] - 1] + token.end[1])
        for token in tokenize.generate_tokens(io.StringIO(text).readline)
    ]


_ASYNC_BLOCK = re.compile(r"^\s*if True:\s*# ASYNC\s*$")


def _sync_blocks(text: str) -> str:
    """Each `if True:  # ASYNC` block replaced by the body of its `else:` (or by nothing), one
    indentation level out."""
    lines = text.splitlines(keepends=True)
    blocks = [
        node
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.If) and _ASYNC_BLOCK.match(lines[node.lineno - 1])
    ]
    for node in sorted(blocks, key=lambda n: n.lineno, reverse=True):
        assert node.end_lineno is not None
        inner = [n for n in blocks if n is not node and node.lineno < n.lineno <= node.end_lineno]
        if inner:
            raise SystemExit(f"line {inner[0].lineno}: an ASYNC block inside another one at line {node.lineno}")
        if node.orelse and isinstance(node.orelse[0], ast.If) and node.orelse[0].col_offset == node.col_offset:
            raise SystemExit(f"line {node.lineno}: an ASYNC block takes `else:`, not `elif`")
        indent = " " * node.col_offset
        replacement: list[str] = []
        if node.orelse:
            body_end = node.body[-1].end_lineno
            assert body_end is not None
            else_line = next(i for i in range(body_end, node.orelse[0].lineno) if lines[i].strip().startswith("else"))
            for line in lines[else_line + 1 : node.end_lineno]:
                if line.strip() and not line.startswith(indent + "    "):
                    raise SystemExit(f"line {node.lineno}: the `else:` of an ASYNC block is not indented by 4")
                replacement.append(line[4:] if line.strip() else line)
        lines[node.lineno - 1 : node.end_lineno] = replacement
    return "".join(lines)


def to_sync(text: str) -> str:
    """The sync text of an asyncio module (before formatting)."""
    text = _sync_blocks(text)
    # The asyncio package in any import form: `cinegraph_oban.asyncio.x`, `from cinegraph_oban.asyncio
    # import x`, `import cinegraph_oban.asyncio`.
    text = re.sub(r"\bcinegraph_oban\.asyncio\b", "cinegraph_oban", text)
    edits: list[tuple[int, int, str]] = []  # (start offset, end offset, replacement)
    tokens = _tokens(text)
    for index, (token, start, end) in enumerate(tokens):
        if token.type != tokenize.NAME:
            continue
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if token.string == "await" or (
            token.string == "async" and following is not None and following[0].string in ("def", "with", "for")
        ):
            # Drop the keyword and the spaces after it.
            edits.append((start, following[1] if following is not None else end, ""))
        elif token.string in NAMES:
            edits.append((start, end, NAMES[token.string]))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


#: String tokens: on Python 3.12+ an f-string is split into parts, its text in FSTRING_MIDDLE.
_STRING_TOKENS = {tokenize.STRING} | ({tokenize.FSTRING_MIDDLE} if hasattr(tokenize, "FSTRING_MIDDLE") else set())


def _prose(text: str) -> str:
    """PHRASES applied inside string tokens only (docstrings, messages), never to code."""
    for token, start, end in reversed(_tokens(text)):
        if token.type not in _STRING_TOKENS:
            continue
        literal = text[start:end]
        for async_phrase, sync_phrase in PHRASES:
            # A phrase may be broken across lines of a docstring: any run of spaces matches.
            pattern = r"\b" + r"\s+".join(re.escape(word) for word in async_phrase.split(" "))
            literal = re.sub(pattern, lambda _, phrase=sync_phrase: phrase, literal)
        text = text[:start] + literal + text[end:]
    return text


def _check_sync(source: str, text: str) -> None:
    """Refuse output that still holds the asyncio face: code naming it, or prose about its kinds."""
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.NAME and token.string in ("async", "await", *NAMES):
            raise SystemExit(f"cinegraph_oban/{source}: {token.string!r} survives at line {token.start[0]}")
        if token.type in _STRING_TOKENS and re.search(r"Async(Connection|Session|Oban)\b", token.string):
            raise SystemExit(
                f"cinegraph_oban/{source}: line {token.start[0]} still speaks of the asyncio face: "
                f"{token.string[:80]!r}; add the phrase to PHRASES"
            )
    if "cinegraph_oban.asyncio" in text:
        raise SystemExit(f"cinegraph_oban/{source}: an import of cinegraph_oban.asyncio survives")


def generate(source: str) -> tuple[Path, str]:
    phrases = MODULES[source]
    target = source.replace("_async.py", ".py")
    text = (ROOT / "cinegraph_oban" / source).read_text()
    for async_phrase, sync_phrase in phrases:
        if async_phrase not in text:
            raise SystemExit(f"cinegraph_oban/{source}: the phrase to replace is gone: {async_phrase!r}")
        text = text.replace(async_phrase, sync_phrase)
    text = _prose(text)
    text = HEADER.format(source=source) + to_sync(text)
    _check_sync(source, text)
    # What the mapping leaves for ruff: imports to sort again (F401: those only an ASYNC block
    # used), `with a(): with b():` where the source had to nest a sync context manager around an
    # async one, `for x in y: yield x` where the source had no `yield from` (an async generator
    # cannot have one), `Iterable[X] | Iterable[X]` from `Iterable[X] | AsyncIterable[X]`, and
    # an `__all__` whose names sort differently once mapped, and `import prepared as prepared`
    # from the source's `import prepared_async as prepared`.
    rules = "F401,I,PLC0414,PYI016,RUF022,SIM117,UP028"
    fixes = ["check", "--fix", "--unsafe-fixes", "--exit-zero", "--quiet", "--select", rules]
    for command in (fixes, ["format"]):
        text = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--stdin-filename", f"cinegraph_oban/{target}", "-"],
            input=text,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
    return ROOT / "cinegraph_oban" / target, text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated module is not current")
    check = parser.parse_args().check
    stale = []
    for source in MODULES:
        path, text = generate(source)
        if path.exists() and path.read_text() == text:
            continue
        if check:
            stale.append(path.relative_to(ROOT))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        names = ", ".join(str(p) for p in stale)
        print(f"not current: {names}; run `python tools/async_to_sync.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
