"""The Elixir workers jobs are written for, and the options each declares in its own code.

`use Oban.Worker, queue: :tmdb, max_attempts: 5, unique: [...]` lives in Elixir and applies only
to jobs built with `MyWorker.new/2`; a row written by anything else gets the column defaults
(`queue = 'default'`, `max_attempts = 20`) and no uniqueness. The registry carries those options
to Python, so a job enqueued here gets what `TMDbDetailsWorker.new/2` would have given it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cinegraph_oban.errors import Problem, ValidationError
from cinegraph_oban.model.unique import Unique

__all__ = ["DEFAULT_REGISTRY", "TMDB_DETAILS_WORKER", "WorkerRegistry", "WorkerSpec"]


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """One Elixir worker module and the options it declares (`use Oban.Worker, ...`)."""

    name: str
    queue: str | None = None
    max_attempts: int | None = None
    priority: int | None = None
    tags: tuple[str, ...] = ()
    unique: Unique | None = None

    def __post_init__(self) -> None:
        """Refuse a spec whose options no job could be stored with, all problems at once:
        checked here, once, so that a job resolved through the registry carries no name
        PostgreSQL would cut short or refuse. The name is stored as Oban stores it (no
        `Elixir.` prefix); tags given as a list and unique options given as `True` or a mapping
        are taken as the tuple and the `Unique` they mean."""
        problems = name_problems("name", self.name)
        if not problems:
            _set(self, "name", self.name.strip().removeprefix("Elixir."))
            problems = name_problems("name", self.name)
        if self.queue is not None:
            problems += name_problems("queue", self.queue)
        if self.max_attempts is not None and not _int_within(self.max_attempts, 1, MAX_INT4):
            problems.append(
                Problem(
                    "max_attempts", f"expected None or an integer 1..{MAX_INT4}, got {short_repr(self.max_attempts)}"
                )
            )
        if self.priority is not None and not _int_within(self.priority, 0, 9):
            problems.append(Problem("priority", f"expected None or an integer 0..9, got {short_repr(self.priority)}"))
        problems += self._tag_problems()
        declared: object = self.unique
        if declared is False:  # declares no uniqueness, as None does
            _set(self, "unique", None)
        elif declared is not None:
            unique, found = Unique.build(declared)  # type: ignore[arg-type]
            problems += found
            _set(self, "unique", unique)
        if problems:
            raise ValidationError(f"worker spec {short_repr(self.name)}", problems)

    def _tag_problems(self) -> list[Problem]:
        tags: object = self.tags
        if isinstance(tags, str) or not isinstance(tags, Iterable):
            return [Problem("tags", f"expected a list of strings, got {short_repr(tags)}")]
        _set(self, "tags", tuple(tags))
        return [
            Problem(f"tags[{index}]", message)
            for index, tag in enumerate(self.tags)
            if (message := text_problem(tag)) is not None
        ]

    @property
    def short_name(self) -> str:
        """The last segment of the module name, e.g. `TMDbDetailsWorker`."""
        return self.name.rsplit(".", 1)[-1]


MAX_NAME_LENGTH = 127  # CHECK (char_length(...) < 128) on worker and queue
MAX_INT4 = 2_147_483_647
_set = object.__setattr__


def name_problems(label: str, value: object) -> list[Problem]:
    """Why PostgreSQL would refuse `value` as a worker or queue name: not a string, not 1..127
    characters (CHECK worker_length, queue_length), a NUL or a lone surrogate."""
    if not isinstance(value, str):
        return [Problem(label, f"expected a string, got {short_repr(value)}")]
    if 0 < len(value) <= MAX_NAME_LENGTH and value.isascii() and "\x00" not in value:
        return []  # the common case, with no call more (Job.new checks two names a job)
    if not 1 <= len(value) <= MAX_NAME_LENGTH:
        return [Problem(label, f"must be 1..{MAX_NAME_LENGTH} characters, got {len(value)}")]
    message = text_problem(value)
    return [] if message is None else [Problem(label, message)]


def text_problem(value: object) -> str | None:
    """Why PostgreSQL would refuse `value` as a text column's value (tags, names), or None."""
    if not isinstance(value, str):
        return f"expected a string, got {short_repr(value)}"
    if "\x00" in value:
        return "contains a NUL character, which PostgreSQL rejects; remove it"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate, which is not valid UTF-8; remove it or pair it"
    return None


def _int_within(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def short_repr(value: object, limit: int = 80) -> str:
    """`repr(value)`, cut short: a message need not repeat a megabyte of bad input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


#: `Cinegraph.Workers.TMDbDetailsWorker` as declared in Cinegraph today.
TMDB_DETAILS_WORKER = WorkerSpec(
    name="Cinegraph.Workers.TMDbDetailsWorker",
    queue="tmdb",
    max_attempts=5,
    unique=Unique(fields=("args",), keys=("tmdb_id", "imdb_id", "source_key"), period=300),
)


class WorkerRegistry:
    """Worker specs by full module name, resolvable by their bare name when unambiguous."""

    __slots__ = ("_by_name",)

    def __init__(self, specs: Iterable[WorkerSpec] = ()) -> None:
        self._by_name: dict[str, WorkerSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: WorkerSpec) -> WorkerSpec:
        """Add or replace the spec for `spec.name`."""
        if not isinstance(spec, WorkerSpec):
            raise ValidationError(
                "worker registry", [Problem("spec", f"expected a WorkerSpec, got {short_repr(spec)}")]
            )
        self._by_name[spec.name.removeprefix("Elixir.")] = spec
        return spec

    def resolve(self, name: str) -> WorkerSpec | None:
        """The spec for a full module name, or for a bare name that only one spec ends with."""
        name = name.removeprefix("Elixir.")
        if name in self._by_name:
            return self._by_name[name]
        matches = [s for s in self._by_name.values() if s.short_name == name]
        return matches[0] if len(matches) == 1 else None

    def __iter__(self) -> Iterator[WorkerSpec]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def copy(self) -> WorkerRegistry:
        return WorkerRegistry(self)


#: The registry `Job.new` uses unless given another: Cinegraph's workers.
DEFAULT_REGISTRY = WorkerRegistry([TMDB_DETAILS_WORKER])
