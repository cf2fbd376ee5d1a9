"""Oban's job states and unique-job options, with Oban's defaults and Oban's validation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from cinegraph_oban.errors import Problem, ValidationError

__all__ = [
    "DEFAULT_OBAN_VERSION",
    "JOB_STATES",
    "OBAN_VERSIONS",
    "REPLACEABLE_FIELDS",
    "UNIQUE_FIELDS",
    "UNIQUE_STATE_GROUPS",
    "Unique",
    "default_states",
]

#: Every state of `oban_job_state` at schema version 14, in enum order.
JOB_STATES: tuple[str, ...] = (
    "available",
    "suspended",
    "scheduled",
    "executing",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
)
UNIQUE_FIELDS: tuple[str, ...] = ("args", "meta", "queue", "worker")
UNIQUE_TIMESTAMPS: tuple[str, ...] = ("inserted_at", "scheduled_at")
#: Fields `replace` may overwrite on a unique conflict (Oban's `@replace_options`).
REPLACEABLE_FIELDS: tuple[str, ...] = (
    "args",
    "max_attempts",
    "meta",
    "priority",
    "queue",
    "scheduled_at",
    "tags",
    "worker",
)
#: The Oban versions whose unique defaults differ, and the one assumed when a client names none
#: (Cinegraph runs Oban 2.22).
#: The Oban versions a client may name (`oban_version=`): 2.17 to 2.23, with or without the
#: patch release, and the one assumed when none is named (Cinegraph runs Oban 2.22).
OBAN_VERSIONS: tuple[str, ...] = tuple(f"2.{minor}" for minor in range(17, 24))
DEFAULT_OBAN_VERSION = "2.22"
#: Oban's default unique states: up to 2.23.0 the list below; from 2.23.1 the `:successful`
#: group, which adds `suspended` ("[Job] Set `successful` state as default unique options",
#: Oban's CHANGELOG under v2.23.1; `@unique_defaults` and `unique_states/1` in lib/oban/job.ex).
DEFAULT_STATES: dict[str, tuple[str, ...]] = {
    "2.22": ("scheduled", "available", "executing", "retryable", "completed"),
    "2.23": ("suspended", "available", "scheduled", "executing", "retryable", "completed"),
}


def default_states(oban_version: str = DEFAULT_OBAN_VERSION) -> tuple[str, ...]:
    """Oban's default unique states in `oban_version` ("2.23" means 2.23.1 and later)."""
    parts = [int(part) for part in oban_version.split(".")]
    minor, patch = parts[1], parts[2] if len(parts) > 2 else None
    successful = minor > 23 or (minor == 23 and (patch is None or patch >= 1))
    return DEFAULT_STATES["2.23" if successful else "2.22"]


#: Oban 2.23's named state groups (`Oban.Job.unique_states/1`), accepted for `states`.
UNIQUE_STATE_GROUPS: dict[str, tuple[str, ...]] = {
    "all": JOB_STATES,
    "incomplete": ("suspended", "available", "scheduled", "executing", "retryable"),
    "scheduled": ("scheduled",),
    "successful": DEFAULT_STATES["2.23"],
}
_TIME_UNITS: dict[str, int] = {
    "second": 1,
    "seconds": 1,
    "minute": 60,
    "minutes": 60,
    "hour": 3600,
    "hours": 3600,
    "day": 86400,
    "days": 86400,
    "week": 604800,
    "weeks": 604800,
}

Period = int | Literal["infinity"]


@dataclass(frozen=True, slots=True)
class Unique:
    """Unique-job options with Oban's defaults (`Oban.Job.new/2`, `unique:`).

    `period` is in seconds, or `"infinity"`; `keys` limits the args/meta comparison to those
    keys (containment), otherwise args/meta must match exactly. `states` left as None means
    Oban's default states of the Oban version the inserting client targets (`oban_version=`,
    2.22 unless given): 2.23 adds `suspended` to them. `unique=True` means what Oban's
    `unique: true` means: the defaults with no time limit (`period="infinity"`).
    """

    fields: tuple[str, ...] = ("args", "queue", "worker")
    keys: tuple[str, ...] = ()
    period: Period = 60
    states: tuple[str, ...] | None = None
    timestamp: str = "inserted_at"

    def states_for(self, oban_version: str = DEFAULT_OBAN_VERSION) -> tuple[str, ...]:
        """The states the lookup searches: those given, else Oban's defaults for `oban_version`."""
        return self.states if self.states is not None else default_states(oban_version)

    def __post_init__(self) -> None:
        # A list given for a tuple (`Unique(fields=["args"])`) is taken as the tuple it means: a
        # Unique is hashable (the lookup's SQL is cached by it), a list is not.
        if isinstance(self.states, str) and self.states in UNIQUE_STATE_GROUPS:
            object.__setattr__(self, "states", UNIQUE_STATE_GROUPS[self.states])
        for name in ("fields", "keys", "states"):
            value = getattr(self, name)
            if isinstance(value, Iterable) and not isinstance(value, str | bytes | tuple | Mapping):
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def build(cls, options: Unique | Mapping[str, Any] | bool) -> tuple[Unique | None, list[Problem]]:
        """Normalise user input (True, a mapping of options, or a Unique) and validate it."""
        if options is True:
            # Oban: `unique: true` is `Map.put(@unique_defaults, :period, :infinity)`.
            return cls(period="infinity"), []
        if isinstance(options, Unique):
            return options, options.problems()
        if not isinstance(options, Mapping):
            return None, [Problem("unique", f"expected True, a mapping or Unique, got {options!r}")]
        problems: list[Problem] = []
        known = {"fields", "keys", "period", "states", "timestamp"}
        for name in options:
            if name not in known:
                problems.append(Problem("unique", f"unknown option {name!r}; known: {sorted(known)}"))
        values: dict[str, Any] = {}
        for name in ("fields", "keys", "states"):
            if name in options:
                value = options[name]
                if name == "states" and value is None:
                    continue
                if name == "states" and isinstance(value, str):
                    if value not in UNIQUE_STATE_GROUPS:
                        known_groups = sorted(UNIQUE_STATE_GROUPS)
                        message = f"unknown state group {value!r}; known: {known_groups}"
                        problems.append(Problem("unique.states", message))
                    else:
                        values[name] = UNIQUE_STATE_GROUPS[value]
                    continue
                if isinstance(value, str) or not isinstance(value, Sequence):
                    problems.append(Problem(f"unique.{name}", f"expected a list, got {value!r}"))
                else:
                    values[name] = tuple(str(v) for v in value)
        if "period" in options:
            period, problem = _cast_period(options["period"])
            if problem:
                problems.append(problem)
            else:
                values["period"] = period
        if "timestamp" in options:
            values["timestamp"] = str(options["timestamp"])
        unique = cls(**values)
        problems.extend(unique.problems())
        return (None if problems else unique), problems

    def problems(self) -> list[Problem]:
        """What Oban's `validate_unique` would reject."""
        found: list[Problem] = []
        for name in ("fields", "keys", "states"):
            value = getattr(self, name)
            if name == "states" and value is None:
                continue
            if not isinstance(value, tuple):
                found.append(Problem(f"unique.{name}", f"expected a list of strings, got {value!r}"))
        if found:
            return found
        if not self.fields or any(f not in UNIQUE_FIELDS for f in self.fields):
            found.append(
                Problem(
                    "unique.fields", f"expected a non-empty subset of {list(UNIQUE_FIELDS)}, got {list(self.fields)}"
                )
            )
        if self.keys and not any(f in ("args", "meta") for f in self.fields):
            found.append(Problem("unique.keys", "keys only apply when fields include 'args' or 'meta'"))
        found += [
            Problem(f"unique.keys[{index}]", message)
            for index, key in enumerate(self.keys)
            if (message := _key_problem(key)) is not None
        ]
        if self.period != "infinity" and (
            isinstance(self.period, bool) or not isinstance(self.period, int) or not 0 < self.period <= MAX_PERIOD
        ):
            found.append(_period_problem(self.period))
        if self.states is not None and (not self.states or any(s not in JOB_STATES for s in self.states)):
            found.append(
                Problem("unique.states", f"expected a non-empty subset of {list(JOB_STATES)}, got {list(self.states)}")
            )
        if self.timestamp not in UNIQUE_TIMESTAMPS:
            found.append(
                Problem("unique.timestamp", f"expected one of {list(UNIQUE_TIMESTAMPS)}, got {self.timestamp!r}")
            )
        return found


def _key_problem(key: object) -> str | None:
    """Why a unique key can name no key of a job's args or meta (which are checked alike)."""
    if not isinstance(key, str):
        return f"expected a string (an args or meta key as JSON writes it), got {key!r}"
    if "\x00" in key:
        return "contains a NUL character, which no key of args or meta can hold"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate, which no key of args or meta can hold"
    return None


#: The longest finite period: a hundred years. The lookup subtracts it from now, and a period
#: beyond PostgreSQL's timestamps (10**12 s) failed every insert with DatetimeFieldOverflow.
MAX_PERIOD = 100 * 366 * 86_400


def _period_problem(value: Any) -> Problem:
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_PERIOD:
        return Problem(
            "unique.period",
            f"{value} seconds is beyond {MAX_PERIOD} (a hundred years); for no time limit use 'infinity'",
        )
    return Problem("unique.period", f"expected a positive number of seconds or 'infinity', got {value!r}")


def _cast_period(value: Any) -> tuple[Period, Problem | None]:
    if value == "infinity" or value == float("inf"):
        return "infinity", None
    if isinstance(value, timedelta):
        value = value.total_seconds()
        if value != int(value):
            return 0, Problem("unique.period", f"expected whole seconds, got {value!r}")
        value = int(value)
    if isinstance(value, tuple) and len(value) == 2:
        amount, unit = value
        if isinstance(amount, int) and not isinstance(amount, bool) and str(unit) in _TIME_UNITS:
            value = amount * _TIME_UNITS[str(unit)]
        else:
            return 0, Problem("unique.period", f"expected (n, unit) with unit in {sorted(_TIME_UNITS)}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_PERIOD:
        return 0, _period_problem(value)
    return value, None


def check_oban_version(version: object) -> str:
    """The Oban version a client targets: "2.17" to "2.23", or with its patch ("2.23.0")."""
    parts = str(version).split(".")
    well_formed = isinstance(version, str) and 2 <= len(parts) <= 3 and all(p.isdigit() for p in parts)
    if not well_formed or ".".join(parts[:2]) not in OBAN_VERSIONS:
        expected = (
            f"expected the Oban your Elixir application runs, {OBAN_VERSIONS[0]} to {OBAN_VERSIONS[-1]} "
            f"(e.g. '2.22' or '2.23.1'), got {version!r}"
        )
        raise ValidationError("client options", [Problem("oban_version", expected)])
    return ".".join(str(int(p)) for p in parts)
