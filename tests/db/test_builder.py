"""The statement builder (cinegraph_oban/sql/builder.py): the one way the package renders its SQL."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cinegraph_oban.sql import builder

PACKAGE = Path(__file__).resolve().parents[2] / "cinegraph_oban"


def test_no_module_outside_the_statement_layer_renders_a_template() -> None:
    """Every statement goes through `builder`: no other module imports the template library or
    jinja2 (the walk finds the imports the package had before the builder)."""

    def imports(source: str) -> list[str]:
        found = []
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module in ("cinegraph_oban.sql.templates", "jinja2"):
                found.append(node.module)
            elif isinstance(node, ast.ImportFrom) and node.module == "cinegraph_oban.sql":
                found += [f"cinegraph_oban.sql.{a.name}" for a in node.names if a.name != "builder"]
            elif isinstance(node, ast.Import):
                found += [a.name for a in node.names if a.name.startswith(("cinegraph_oban.sql.templates", "jinja2"))]
        return found

    offenders = [
        f"{path.relative_to(PACKAGE).as_posix()}: {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.parent.name != "sql"
        for module in imports(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
    assert imports("from cinegraph_oban.sql.templates import render\nfrom cinegraph_oban.sql import templates") == [
        "cinegraph_oban.sql.templates",
        "cinegraph_oban.sql.templates",
    ]


def test_a_statement_carries_its_parameters_and_is_cached_per_context() -> None:
    first = builder.statement("meta/merge_meta", {"id": 1, "meta": "{}"}, prefix="public")
    assert first.params == {"id": 1, "meta": "{}"} and b'"public".oban_jobs' in first.sql
    other = builder.statement("meta/merge_meta", prefix="my schema")
    assert other.params == {} and b'"my schema".oban_jobs' in other.sql
    assert builder.sql("meta/merge_meta", prefix="public") is first.sql  # rendered once


def test_names_are_given_without_the_suffix() -> None:
    with pytest.raises(ValueError, match=r"without \.sql\.j2"):
        builder.sql("session/begin.sql.j2")


def test_a_copy_is_sent_without_parameters_so_its_percent_signs_are_single() -> None:
    copy = builder.copy_sql("insert/copy_jobs", prefix="a%b", scheduled=False)
    parametrized = builder.sql("insert/copy_jobs", prefix="a%b", scheduled=False)
    assert b'"a%%b"' in parametrized and b'"a%b"' in copy and b"%%" not in copy


def test_a_template_of_several_statements_is_split() -> None:
    steps = builder.statements("oban/migrations/v01", prefix="public", create_schema=False, legacy_tags=False)
    assert len(steps) > 3 and all(s.endswith(";") for s in steps)
