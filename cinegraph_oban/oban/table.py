"""The Oban schema in a database: installing it as Elixir Oban does, and detecting what is there.

`install` replays Oban's own Postgres migrations (V01 .. V14, one template each under
`sql_templates/oban/migrations/`) and records the version as the table comment, so a database
set up here is the one `Oban.Migration.up(version: n, prefix: p)` would have made. `detect`
reads the catalogs instead of assuming: the version comment, the enum's labels, the column types,
the id sequence, the V11 notify trigger and the check constraints. `ObanTable.check_job` says
whether a job fits the database it is about to be written to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cinegraph_oban.errors import (
    Problem,
    UnsupportedSchemaError,
    ValidationError,
)
from cinegraph_oban.sql import builder

__all__ = [
    "LATEST_VERSION",
    "MIN_VERSION",
    "SUPPORTED_VERSIONS",
    "ObanSchema",
    "ObanTable",
    "detect",
    "install",
    "install_statements",
    "migrated_version",
    "notify_channel",
]

MIN_VERSION = 11
LATEST_VERSION = 14
SUPPORTED_VERSIONS = tuple(range(MIN_VERSION, LATEST_VERSION + 1))
PRO_VERSION_COMMENT = "∞"  # Oban Pro's marker for "managed by Pro"; treated as the latest version.


def notify_channel(prefix: str) -> str:
    """Oban's insert channel for a prefix (LISTEN needs it double-quoted: it contains a dot)."""
    return f"{prefix}.oban_insert"


def install_statements(
    version: int = LATEST_VERSION,
    prefix: str = "public",
    *,
    legacy_tags: bool = False,
    from_version: int = 0,
) -> list[list[str]]:
    """The statements of each Oban migration step from `from_version` + 1 up to `version`.

    Each step ends by recording its version as the table comment, as Oban does. `legacy_tags`
    gives the `varchar(255)[]` tags column of tables made before Oban 2.18.3.
    """
    if not 1 <= version <= LATEST_VERSION:
        raise UnsupportedSchemaError(
            f"cannot install Oban schema version {version}: this package knows 1..{LATEST_VERSION}"
        )
    context: dict[str, Any] = {"prefix": prefix, "create_schema": prefix != "public", "legacy_tags": legacy_tags}
    steps: list[list[str]] = []
    for step in range(from_version + 1, version + 1):
        statements = builder.statements(f"oban/migrations/v{step:02d}", **context)
        statements += builder.statements("oban/migrations/record_version", prefix=prefix, version=step)
        steps.append(statements)
    return steps


@dataclass(frozen=True, slots=True)
class ObanTable:
    """What an Oban installation looks like, as read from the catalogs."""

    prefix: str
    version: int
    states: tuple[str, ...]
    errors_type: str
    tags_type: str
    columns: tuple[str, ...]
    id_sequence: str
    has_notify_trigger: bool
    indexes: tuple[str, ...]
    check_constraints: tuple[str, ...]
    #: args/meta when a plain GIN index with the default jsonb_ops covers them and the server
    #: has jsonpath (PostgreSQL 12+): the unique lookup may then probe it with one value.
    probe_columns: tuple[str, ...] = ()

    @property
    def max_priority(self) -> int:
        """3 while the V10 `priority_range` CHECK (0..3) is in place, else Oban's 9."""
        return 3 if "priority_range" in self.check_constraints else 9

    @property
    def channel(self) -> str:
        return notify_channel(self.prefix)

    @property
    def notifies_itself(self) -> bool:
        """At V11 the `oban_notify` trigger already sends the insert notification."""
        return self.has_notify_trigger

    @property
    def max_tag_length(self) -> int | None:
        return 255 if self.tags_type.startswith("character varying(255)") else None

    def check_job(self, job: Any, where: str = "job") -> None:
        """Raise if this database cannot store `job` as it is."""
        if job.state not in self.states:
            raise UnsupportedSchemaError(
                f"{where}: state {job.state!r} does not exist in {self.prefix}.oban_job_state "
                f"(the database has {list(self.states)}; Oban schema version {self.version}); "
                f"migrate Oban to version 14 or use another state"
            )
        problems: list[Problem] = []
        if job.id is not None:
            problems.append(
                Problem(
                    "id",
                    f"this job is already stored (id {job.id}): inserting it again would write a second "
                    "row, past its uniqueness check; build a new one with Job.new(...)",
                )
            )
        if job.priority > self.max_priority:
            problems.append(
                Problem(
                    "priority",
                    f"{job.priority} is above {self.max_priority}, the most this database allows: "
                    f"its Oban schema is at version {self.version} (CHECK priority_range 0..3); use "
                    f"0..3 or migrate Oban to version 12 or later",
                )
            )
        limit = self.max_tag_length
        if limit is not None:
            problems += [
                Problem(
                    "tags",
                    f"{tag[:20]!r}... is longer than {limit} characters, the limit of this "
                    f"table's {self.tags_type} column",
                )
                for tag in job.tags
                if len(tag) > limit
            ]
        if problems:
            raise ValidationError(f"{where} for worker {job.worker!r}", problems)


def detect_sql() -> bytes:
    return builder.sql("oban/detect")


#: The earlier name of ObanTable.
ObanSchema = ObanTable


def table_from_catalog(row: dict[str, Any], prefix: str, dbname: str) -> ObanTable:
    """The ObanTable a `oban/detect` row describes (shared by the sync and async clients)."""
    if not row["table_exists"]:
        raise UnsupportedSchemaError(
            f"no Oban jobs table: {prefix}.oban_jobs does not exist in database "
            f"{dbname!r}. Run Oban's migrations (Oban.Migration.up(version: 14)), "
            f"`cinegraph-oban schema install`, or pass the right --prefix"
        )
    comment = row["version_comment"]
    if comment is None:
        version = 0
    elif comment.strip() == PRO_VERSION_COMMENT:
        version = LATEST_VERSION
    elif comment.strip().isdigit():
        version = int(comment.strip())
    else:
        raise UnsupportedSchemaError(
            f"{prefix}.oban_jobs has the comment {comment!r}, which is not an Oban schema version; "
            "Oban records its migrated version there"
        )
    if version < MIN_VERSION:
        raise UnsupportedSchemaError(
            f"{prefix}.oban_jobs is at Oban schema version {version}; version {MIN_VERSION} or "
            f"later is needed (Oban 2.17+). Run Oban.Migration.up(version: {LATEST_VERSION})"
        )
    columns = tuple(row["columns"] or ())
    required = {"id", "state", "queue", "worker", "args", "meta", "tags", "priority", "max_attempts", "scheduled_at"}
    missing = sorted(required - set(columns))
    if missing or row["id_sequence"] is None:
        raise UnsupportedSchemaError(
            f"{prefix}.oban_jobs is missing {missing or ['the id sequence']}: it does not look like a "
            f"table Oban's migrations made"
        )
    return ObanTable(
        prefix=prefix,
        version=version,
        states=tuple(row["states"] or ()),
        errors_type=row["errors_type"],
        tags_type=row["tags_type"],
        columns=columns,
        id_sequence=row["id_sequence"],
        has_notify_trigger=bool(row["has_notify_trigger"]),
        indexes=tuple(row["indexes"] or ()),
        check_constraints=tuple(row["check_constraints"] or ()),
        probe_columns=tuple(row["probe_columns"] or ()),
    )


# Installing and detecting (I/O) live in cinegraph_oban.oban.installation, generated from
# cinegraph_oban/oban/installation_async.py; they stay importable from here.
from cinegraph_oban.oban.installation import detect, install, migrated_version  # noqa: E402
