"""The SQL template library: every statement the package runs, loaded once from `sql_templates/`.

SQL text is trusted package data. Templates may only vary identifiers (through the `ident`
filter, which is `psycopg.sql.Identifier`) and, where PostgreSQL cannot bind a parameter (DDL,
function bodies, comments), literals through the `literal` filter (`psycopg.sql.Literal`).
Values are always parameters (`%(name)s`), which the server binds.

In a built wheel the templates live inside the package (`cinegraph_oban/sql_templates`); in a
source checkout they are read from the repository's top-level `sql_templates/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import jinja2
from psycopg import sql

__all__ = ["render", "render_statements", "split_statements", "template_root"]


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string()


def _literal(value: object) -> str:
    return sql.Literal(value).as_string()


@cache
def template_root() -> Path:
    """Where the templates are: inside the installed package, else the source checkout."""
    package_dir = Path(__file__).resolve().parent
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
    return env


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(_freeze(v) for v in value)
    return value


@lru_cache(maxsize=512)
def _render_cached(name: str, frozen: tuple[tuple[str, Any], ...]) -> str:
    # Templates only iterate context values or test membership, so the frozen tuple form of a
    # list or set renders the same as the original.
    return _environment().get_template(name).render(**dict(frozen)).strip()


def render(name: str, **context: Any) -> str:
    """Render one template to SQL text; the result is cached per template and context."""
    frozen = tuple(sorted((key, _freeze(value)) for key, value in context.items()))
    return _render_cached(name, frozen)


def split_statements(text: str) -> list[str]:
    """Split rendered SQL into statements, each ending with a semicolon.

    A statement ends at a line ending in `;` outside a dollar-quoted body. Comments-only chunks
    are dropped.
    """
    statements: list[str] = []
    current: list[str] = []
    in_dollar = False
    for line in text.splitlines():
        if line.count("$$") % 2 == 1:
            in_dollar = not in_dollar
        current.append(line)
        if not in_dollar and line.rstrip().endswith(";"):
            statement = "\n".join(current).strip()
            if _has_code(statement):
                statements.append(statement)
            current = []
    rest = "\n".join(current).strip()
    if _has_code(rest):
        statements.append(rest if rest.endswith(";") else rest + ";")
    return statements


def _has_code(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


def render_statements(name: str, **context: Any) -> list[str]:
    """Render a multi-statement template (DDL, migration steps) into its statements."""
    return split_statements(render(name, **context))
