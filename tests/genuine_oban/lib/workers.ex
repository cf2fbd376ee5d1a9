defmodule Cinegraph.Workers.TMDbDetailsWorker do
  @moduledoc """
  Cinegraph's worker as the design document and legacy-tables.md describe it, without TMDb: a
  job whose args carry an `imdb_id` and no `tmdb_id` is a failed lookup (the failure merged into
  meta, `{:cancel, ...}`); a job with a `tmdb_id` is a soft import (merged into meta, `:ok`).
  The merge is the atomic `meta || patch` the legacy code should have used.
  """
  use Oban.Worker,
    queue: :tmdb,
    max_attempts: 5,
    unique: [fields: [:args], keys: [:tmdb_id, :imdb_id, :source_key], period: 300]

  @failure_keys ~w(imdb_id title year source source_key metadata)

  @impl Oban.Worker
  def perform(%Oban.Job{args: %{"tmdb_id" => tmdb_id} = args} = job) do
    Harness.merge_meta(job, %{
      "status" => "imported",
      "import_type" => "soft",
      "movie_id" => tmdb_id * 10,
      "movie_title" => Map.get(args, "title", "Movie #{tmdb_id}"),
      "tmdb_id" => tmdb_id,
      "quality_criteria_failed" => Map.get(args, "criteria", ["min_votes"]),
      "reason" => "quality_criteria"
    })

    :ok
  end

  def perform(%Oban.Job{args: %{"imdb_id" => _} = args} = job) do
    patch =
      args
      |> Map.take(@failure_keys)
      |> Map.merge(%{"status" => "failed", "failure_reason" => "no_tmdb_match"})

    Harness.merge_meta(job, patch)
    {:cancel, "no_tmdb_match"}
  end
end

defmodule Harness.Workers.Completes do
  @moduledoc "Returns :ok."
  use Oban.Worker, queue: :harness
  @impl Oban.Worker
  def perform(_job), do: :ok
end

defmodule Harness.Workers.Raises do
  @moduledoc "Raises; with attempts left the job becomes retryable."
  use Oban.Worker, queue: :harness, max_attempts: 3
  @impl Oban.Worker
  def perform(_job), do: raise("harness failure")
end

defmodule Harness.Workers.Discards do
  @moduledoc "Returns {:discard, reason}."
  use Oban.Worker, queue: :harness
  @impl Oban.Worker
  def perform(_job), do: {:discard, "harness discard"}
end

defmodule Harness.Workers.Snoozes do
  @moduledoc "Snoozes on its first attempt (args[\"seconds\"], 60 by default), completes after."
  use Oban.Worker, queue: :harness
  @impl Oban.Worker
  def perform(%Oban.Job{attempt: 1, args: args}), do: {:snooze, Map.get(args, "seconds", 60)}
  def perform(_job), do: :ok
end
