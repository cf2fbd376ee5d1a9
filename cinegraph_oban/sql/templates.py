"""The SQL template library: every statement the package runs, loaded once from `sql_templates/`
(`builder` is the one way the rest of the package renders them).

SQL text is trusted package data. Templates may only vary identifiers (through the `ident`
filter, which is `psycopg.sql.Identifier`) and, where PostgreSQL cannot bind a parameter (DDL,
function bodies, comments), literals through the `literal` filter (`psycopg.sql.Literal`).
Values are always parameters (`%(name)s`), which the server binds. Every rendered statement is
executed with parameters (`{}` when it has none: tests/db/test_identifiers.py checks each call), so
a literal `%` in a template is written `%%`, and both filters double the `%` of what they quote.

In a built wheel the templates live inside the package (`cinegraph_oban/sql_templates`); in a
source checkout they are read from the repository's top-level `sql_templates/`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import jinja2
from psycopg import sql

from cinegraph_oban.insert.row import INSERTABLE

__all__ = ["freeze", "render", "render_statements", "split_statements", "template_root", "unparametrized"]


def _ident(name: str) -> str:
    # Every rendered statement is executed with parameters (a dict, `{}` when it has none), and
    # psycopg then reads `%` as the start of a placeholder: `%` in a name is written `%%`, which
    # psycopg (and statements.prepared) turn back into `%`. A schema named `%%` is `"%%"`.
    return sql.Identifier(name).as_string().replace("%", "%%")


def _literal(value: object) -> str:
    return sql.Literal(value).as_string().replace("%", "%%")


def _name_literal(names: list[str] | tuple[str, ...]) -> str:
    """A qualified name as a string literal, for `::regclass`: `'"my schema".oban_jobs'`
    (quoted once, its `%` doubled once)."""
    return _literal(".".join(sql.Identifier(name).as_string() for name in names))


@cache
def template_root() -> Path:
    """Where the templates are: inside the installed package, else the source checkout."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "sql_templates", package_dir.parent / "sql_templates"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(
        f"the SQL templates are missing: looked in {package_dir / 'sql_templates'} and "
        f"{package_dir.parent / 'sql_templates'}; reinstall cinegraph-oban"
    )


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_root())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=False,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["ident"] = _ident
    env.filters["literal"] = _literal
    env.filters["name_literal"] = _name_literal
    env.globals["insertable"] = INSERTABLE  # the job row's columns (insert/_row.sql.j2)
    return env


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(_freeze(v) for v in value)
    return value


def freeze(context: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A template context in hashable form, the key of the render caches."""
    return tuple(sorted((key, _freeze(value)) for key, value in context.items()))


@lru_cache(maxsize=512)
def _render_cached(name: str, frozen: tuple[tuple[str, Any], ...]) -> str:
    # Templates only iterate context values or test membership, so the frozen tuple form of a
    # list or set renders the same as the original.
    context = dict(frozen)
    context.setdefault("dollar", dollar_tag(context))  # once per template and context: cached
    return _environment().get_template(name).render(**context).strip()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _strings(item)


def dollar_tag(context: Mapping[str, Any]) -> str:
    """A dollar-quote tag that occurs in no string of `context`: a schema named `a$$b` would
    otherwise end a `$$` body (function bodies, DO blocks) in the middle of its own name."""
    texts = list(_strings(dict(context)))
    for number in itertools.count():
        tag = f"$cg{number or ''}$"
        if not any(tag in text for text in texts):
            return tag
    raise AssertionError("unreachable")


def render(name: str, **context: Any) -> str:
    """Render one template to SQL text; the result is cached per template and context.

    `dollar` is given to every template: the dollar-quote tag to write bodies with (`dollar_tag`).
    """
    return _render_cached(name, freeze(context))


def split_statements(text: str) -> list[str]:
    """Split rendered SQL into statements, each ending with a semicolon.

    A small lexer: a `;` ends a statement only outside single-quoted strings (`''` inside;
    `E'...'` with backslash escapes), double-quoted identifiers (`""` inside), dollar-quoted
    bodies (`$tag$ ... $tag$`), `--` comments and `/* */` comments (nested, as PostgreSQL's).
    Line endings are never touched (a schema name may hold `\r\n` or U+2028). Statements made
    of comments and whitespace only are dropped.
    """
    statements: list[str] = []
    start = 0
    code = False  # whether the current statement has anything but comments and whitespace
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if c == "/" and text.startswith("/*", i):
            i = _block_comment_end(text, i)
            continue
        if c.isspace():
            i += 1
            continue
        if c == ";":
            if code:
                statements.append(text[start : i + 1].strip())
            start, code = i + 1, False
            i += 1
            continue
        code = True
        if c == "'":
            escaped = i > 0 and text[i - 1] in "eE" and (i < 2 or not (text[i - 2].isalnum() or text[i - 2] == "_"))
            i = _quoted_end(text, i, "'", backslashes=escaped)
        elif c == '"':
            i = _quoted_end(text, i, '"', backslashes=False)
        elif c == "$" and (match := _DOLLAR_TAG.match(text, i)) and not (i > 0 and _IDENT_CHAR.match(text[i - 1])):
            tag = match.group(0)
            end = text.find(tag, match.end())
            i = n if end < 0 else end + len(tag)
        else:
            i += 1
    rest = text[start:].strip()
    if code and rest:
        statements.append(rest if rest.endswith(";") else rest + ";")
    return statements


_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_\u0080-\U0010ffff]")


def _quoted_end(text: str, i: int, quote: str, *, backslashes: bool) -> int:
    """The index after the quoted string or identifier opening at `i`."""
    j = i + 1
    while j < len(text):
        c = text[j]
        if backslashes and c == "\\":
            j += 2
            continue
        if c == quote:
            if text.startswith(quote, j + 1):  # a doubled quote stands for one
                j += 2
                continue
            return j + 1
        j += 1
    return len(text)


def _block_comment_end(text: str, i: int) -> int:
    depth, j = 0, i
    while j < len(text):
        if text.startswith("/*", j):
            depth, j = depth + 1, j + 2
        elif text.startswith("*/", j):
            depth, j = depth - 1, j + 2
            if depth == 0:
                return j
        else:
            j += 1
    return len(text)


def unparametrized(statement: bytes) -> bytes:
    """A rendered statement in the form to send with no parameters at all: psycopg's `COPY`
    merges parameters only when there are some, so `%%` is turned into `%` here instead."""
    return statement.replace(b"%%", b"%")


def render_statements(name: str, **context: Any) -> list[str]:
    """Render a multi-statement template (DDL, migration steps) into its statements."""
    return split_statements(render(name, **context))
