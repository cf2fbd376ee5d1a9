defmodule Harness.Migration do
  @moduledoc "Oban's own Oban.Migration, to the version and prefix the request names."
  use Ecto.Migration

  def up do
    %{version: version, prefix: prefix} = :persistent_term.get({__MODULE__, :request})
    Oban.Migration.up(version: version, prefix: prefix)
  end

  def down do
    %{version: version, prefix: prefix} = :persistent_term.get({__MODULE__, :request})
    Oban.Migration.down(version: version, prefix: prefix)
  end
end

defmodule Harness do
  @moduledoc """
  A line-oriented server on stdin/stdout for tests/genuine.py. Each request is one JSON object
  per line, `{"id": n, "op": "...", ...}`; each answer one line `@@harness {"id": n, "ok": ...}`
  or `@@harness {"id": n, "error": "..."}` (other output, such as Oban's logs, goes to stderr).

  Ops: migrate, insert, start, stop, engine, forget (see handle/1).
  """
  import Ecto.Query

  @marker "@@harness "

  def main do
    :logger.update_handler_config(:default, :config, %{type: :standard_error})
    Logger.configure(level: :warning)
    {:ok, _} = Application.ensure_all_started(:oban)
    {:ok, _} = Application.ensure_all_started(:postgrex)
    # Load every module as a release does: Oban resolves a row's worker with Module.safe_concat,
    # which finds only modules whose atoms exist.
    :ok = Application.load(:harness)
    {:ok, modules} = :application.get_key(:harness, :modules)
    Enum.each(modules, &Code.ensure_loaded!/1)
    {:ok, _} = DynamicSupervisor.start_link(name: Harness.Instances, strategy: :one_for_one)
    :ets.new(:harness_repos, [:named_table, :public])
    IO.puts(@marker <> Jason.encode!(%{ready: true, oban: Application.spec(:oban, :vsn) |> to_string()}))
    loop()
  end

  defp loop do
    case IO.gets(:stdio, "") do
      :eof ->
        System.halt(0)

      {:error, _} ->
        System.halt(0)

      line ->
        request = Jason.decode!(line)

        reply =
          try do
            %{id: request["id"], ok: handle(request)}
          rescue
            error -> %{id: request["id"], error: Exception.format(:error, error, __STACKTRACE__)}
          catch
            kind, value -> %{id: request["id"], error: Exception.format(kind, value, __STACKTRACE__)}
          end

        IO.puts(@marker <> Jason.encode!(reply))
        loop()
    end
  end

  # -- the ops -------------------------------------------------------------------------------

  def handle(%{"op" => "migrate", "url" => url, "prefix" => prefix, "version" => version} = req) do
    repo = repo(url)
    :persistent_term.put({Harness.Migration, :request}, %{version: version, prefix: prefix})
    direction = if req["direction"] == "down", do: :down, else: :up
    stamp = System.unique_integer([:positive])

    Ecto.Migrator.run(repo, [{stamp, Harness.Migration}], direction,
      all: true,
      log: false,
      log_migrations_sql: false,
      log_migrator_sql: false
    )

    repo.query!("DROP TABLE IF EXISTS public.genuine_oban_schema_migrations", [], log: false)
    %{version: version}
  end

  def handle(%{"op" => "insert", "name" => name, "jobs" => jobs} = req) do
    changesets = Enum.map(jobs, &changeset/1)

    if req["mode"] == "insert_all" do
      name |> instance() |> Oban.insert_all(changesets) |> Enum.map(&describe/1)
    else
      Enum.map(changesets, fn changeset ->
        case Oban.insert(instance(name), changeset) do
          {:ok, job} -> describe(job)
          {:error, reason} -> %{error: inspect(reason)}
        end
      end)
    end
  end

  def handle(%{"op" => "start", "name" => name, "url" => url, "prefix" => prefix} = req) do
    repo = repo(url)
    queues = for {queue, limit} <- req["queues"] || %{}, do: {String.to_atom(queue), limit}

    plugins =
      for {plugin, opts} <- req["plugins"] || %{} do
        opts = for {key, value} <- opts, do: {String.to_atom(key), value}

        case plugin do
          "pruner" -> {Oban.Plugins.Pruner, opts}
          "lifeline" -> {Oban.Plugins.Lifeline, opts}
        end
      end

    opts = [
      name: instance(name),
      repo: repo,
      prefix: prefix,
      queues: if(queues == [], do: false, else: queues),
      # plugins: false would also take leadership (and so staging) away: an empty list keeps it.
      plugins: plugins,
      notifier: Oban.Notifiers.Postgres,
      peer: if(req["leader"] == false, do: false, else: Oban.Peers.Database),
      stage_interval: interval(Map.get(req, "stage_interval", 1_000)),
      shutdown_grace_period: 100,
      node: Map.get(req, "node", "harness")
    ]

    {:ok, _pid} = DynamicSupervisor.start_child(Harness.Instances, {Oban, opts})
    if req["leader"] != false, do: await_leader(instance(name), 50)
    %{started: name}
  end

  def handle(%{"op" => "stop", "name" => name}) do
    case Oban.whereis(instance(name)) do
      nil -> %{stopped: false}
      pid -> %{stopped: DynamicSupervisor.terminate_child(Harness.Instances, pid) == :ok}
    end
  end

  def handle(%{"op" => "forget", "url" => url}) do
    case :ets.lookup(:harness_repos, url) do
      [{^url, repo}] ->
        :ets.delete(:harness_repos, url)
        Supervisor.stop(repo)
        %{forgotten: true}

      [] ->
        %{forgotten: false}
    end
  end

  def handle(%{"op" => "engine", "name" => name, "fun" => fun} = req) do
    conf = Oban.config(instance(name))

    case fun do
      "fetch" ->
        {:ok, meta} = Oban.Engine.init(conf, queue: req["queue"], limit: req["limit"])
        {:ok, {meta, jobs}} = Oban.Engine.fetch_jobs(conf, meta, %{})
        %{ids: Enum.map(jobs, & &1.id), node: meta.node, uuid: meta.uuid}

      "stage" ->
        {:ok, staged} = Oban.Engine.stage_jobs(conf, Oban.Job, limit: req["limit"] || 5_000)
        %{ids: staged |> Enum.map(& &1.id) |> Enum.sort()}

      "prune" ->
        opts = [max_age: req["max_age"], limit: req["limit"] || 10_000]
        {:ok, pruned} = Oban.Engine.prune_jobs(conf, Oban.Job, opts)
        %{ids: pruned |> Enum.map(& &1.id) |> Enum.sort()}

      outcome ->
        job = Oban.Repo.get!(conf, Oban.Job, req["job_id"])
        error = %{kind: :error, reason: %RuntimeError{message: req["message"] || "boom"}, stacktrace: []}
        job = %{job | unsaved_error: error}

        :ok =
          case outcome do
            "complete" -> Oban.Engine.complete_job(conf, job)
            "discard" -> Oban.Engine.discard_job(conf, job)
            "cancel" -> Oban.Engine.cancel_job(conf, job)
            "error" -> Oban.Engine.error_job(conf, job, req["seconds"])
            "snooze" -> Oban.Engine.snooze_job(conf, job, req["seconds"])
          end

        %{done: outcome}
    end
  end

  # -- helpers -------------------------------------------------------------------------------

  @doc "Merge a patch into the job's meta atomically (what the worker does)."
  def merge_meta(%Oban.Job{id: id, conf: conf}, patch) do
    query = from(j in Oban.Job, where: j.id == ^id, update: [set: [meta: fragment("? || ?", j.meta, ^patch)]])
    Oban.Repo.update_all(conf, query, [])
  end

  defp interval("infinity"), do: :infinity
  defp interval(ms), do: ms

  defp instance(name), do: {Harness.Instance, name}

  # A repo module of its own per database (not a dynamic repo: Oban's Postgres notifier reads
  # the repo module's static config for its own connection).
  defp repo(url) do
    case :ets.lookup(:harness_repos, url) do
      [{^url, repo}] ->
        repo

      [] ->
        repo = Module.concat(Harness.Repo, "R#{System.unique_integer([:positive])}")
        body = quote do: use(Ecto.Repo, otp_app: :harness, adapter: Ecto.Adapters.Postgres)
        Module.create(repo, body, Macro.Env.location(__ENV__))

        Application.put_env(:harness, repo,
          url: url,
          pool_size: 4,
          log: false,
          migration_source: "genuine_oban_schema_migrations"
        )

        {:ok, pid} = repo.start_link()
        Process.unlink(pid)
        :ets.insert(:harness_repos, {url, repo})
        repo
    end
  end

  defp await_leader(_name, 0), do: :ok

  defp await_leader(name, tries) do
    if Oban.Peer.leader?(name), do: :ok, else: (Process.sleep(20); await_leader(name, tries - 1))
  end

  # A job as JSON describes it: {"worker", "args", "via": "worker" | "job", "opts": {...}}.
  # "via": "worker" builds it with the worker module's new/2 (its own options apply), "job"
  # with Oban.Job.new/2 and the worker's name only.
  defp changeset(%{"worker" => worker} = spec) do
    args = Map.get(spec, "args", %{})
    opts = spec |> Map.get("opts", %{}) |> Enum.map(&option/1)

    case Map.get(spec, "via", "worker") do
      "worker" -> Module.concat([worker]).new(args, opts)
      "job" -> Oban.Job.new(args, [worker: worker] ++ opts)
    end
  end

  defp option({"scheduled_at", iso}) do
    {:ok, at, _} = DateTime.from_iso8601(iso)
    {:scheduled_at, at}
  end

  defp option({"unique", spec}) when is_map(spec), do: {:unique, Enum.map(spec, &unique_option/1)}
  defp option({"unique", spec}), do: {:unique, spec}
  defp option({"replace", spec}), do: {:replace, for({s, f} <- spec, do: {atom(s), Enum.map(f, &atom/1)})}
  defp option({key, value}), do: {String.to_existing_atom(key), value}

  defp unique_option({"period", "infinity"}), do: {:period, :infinity}
  defp unique_option({"states", states}) when is_list(states), do: {:states, Enum.map(states, &atom/1)}
  defp unique_option({"states", group}), do: {:states, atom(group)}
  defp unique_option({"timestamp", ts}), do: {:timestamp, atom(ts)}
  defp unique_option({key, values}) when key in ["fields", "keys"], do: {atom(key), Enum.map(values, &atom/1)}
  defp unique_option({key, value}), do: {atom(key), value}

  defp atom(value), do: String.to_atom(value)

  defp describe(%Oban.Job{} = job) do
    %{id: job.id, state: job.state, conflict: job.conflict?, queue: job.queue, worker: job.worker}
  end
end
