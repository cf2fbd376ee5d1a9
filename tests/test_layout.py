"""The tests are shaped like the code: a folder of tests per folder of the package, and what
tests share lives in tests/helpers.py (or tests/strategies.py), never in another test module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cinegraph_oban"
TESTS = ROOT / "tests"
#: Package folders whose tests live in another folder: sql/ is tested with db/ (identifiers and
#: the template library's quoting), asyncio/ (a namespace) by tests/test_asyncio_face.py.
TESTED_ELSEWHERE = {"sql": "db", "asyncio": "."}


def test_every_package_folder_has_a_test_folder() -> None:
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert folders, "no package folders found"
    missing = [name for name in folders if not any((TESTS / TESTED_ELSEWHERE.get(name, name)).glob("test_*.py"))]
    assert missing == []


def test_no_test_module_imports_another() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[-1].startswith("test_")]
    assert offenders == []
