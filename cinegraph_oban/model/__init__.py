"""The job model: `Job` (what Oban requires of a row), `Unique`, the Elixir workers' own options
(`workers`) and Oban's timestamps."""
