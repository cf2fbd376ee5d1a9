"""The shape of Cinegraph's two legacy import tables, as the original Ecto migrations made them:
their names, their columns (type, NOT NULL, default), and what a relkind is called. No I/O: the
functions that create, write and read them are in `legacy` (and `legacy_async`).
"""

from __future__ import annotations

__all__ = ["EXPECTED_COLUMNS", "LEGACY_TABLES", "RELATION_KINDS"]


LEGACY_TABLES = ("failed_imdb_lookups", "skipped_imports")


#: column -> (type, NOT NULL, default), as the original Ecto migrations created them.
EXPECTED_COLUMNS: dict[str, dict[str, tuple[str, bool, str | None]]] = {
    "failed_imdb_lookups": {
        "id": ("bigint", True, "nextval('{seq}'::regclass)"),
        "imdb_id": ("character varying(255)", True, None),
        "title": ("character varying(255)", False, None),
        "year": ("integer", False, None),
        "source": ("character varying(255)", True, None),
        "source_key": ("character varying(255)", False, None),
        "reason": ("character varying(255)", True, None),
        "metadata": ("jsonb", False, "'{}'::jsonb"),
        "retry_count": ("integer", False, "0"),
        "last_retry_at": ("timestamp(0) without time zone", False, None),
        "inserted_at": ("timestamp(0) without time zone", True, None),
        "updated_at": ("timestamp(0) without time zone", True, None),
    },
    "skipped_imports": {
        "id": ("bigint", True, "nextval('{seq}'::regclass)"),
        "tmdb_id": ("integer", True, None),
        "title": ("character varying(255)", False, None),
        "reason": ("character varying(255)", False, None),
        "criteria_failed": ("jsonb", False, None),
        "checked_at": ("timestamp without time zone", False, "now()"),
        "inserted_at": ("timestamp without time zone", True, None),
    },
}


#: pg_class.relkind -> what a user is told the name is.
RELATION_KINDS = {"r": "a table", "v": "a view", "m": "a materialized view", "p": "a table", "f": "a foreign table"}
