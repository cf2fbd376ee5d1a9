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
from cinegraph_oban.unique import Unique

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
        """Refuse a spec whose options no job could be stored with: checked once, here, so that
        a job resolved through the registry carries no name PostgreSQL would cut or refuse."""
        problems = [p for label in ("name", "queue") for p in _name_problems(label, getattr(self, label))]
        for label in ("max_attempts", "priority"):
            value = getattr(self, label)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                problems.append(Problem(label, f"expected an integer or None, got {value!r}"))
        if problems:
            raise ValidationError(f"worker spec {self.name!r}", problems)

    @property
    def short_name(self) -> str:
        """The last segment of the module name, e.g. `TMDbDetailsWorker`."""
        return self.name.rsplit(".", 1)[-1]


def _name_problems(label: str, value: object) -> list[Problem]:
    if value is None and label == "queue":
        return []
    if not isinstance(value, str):
        return [Problem(label, f"expected a string, got {value!r}")]
    if not 1 <= len(value) <= 127:  # CHECK (char_length(...) < 128) on worker and queue
        return [Problem(label, f"must be 1..127 characters, got {len(value)}")]
    if "\x00" in value:
        return [Problem(label, "contains a NUL character, which PostgreSQL rejects")]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return [Problem(label, "contains a lone surrogate, which is not valid UTF-8")]
    return []


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
