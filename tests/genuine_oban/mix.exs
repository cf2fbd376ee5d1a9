# The contract harness: genuine Elixir Oban driven by the Python test suite (tests/genuine.py).
#
# Built by tests/genuine_oban/build into a cache outside the work tree. With GENUINE_OBAN_VENDOR
# set (the build script sets it), every Hex-style dependency is checked out from the vendored
# tarballs by Harness.VendoredSCM below, so no Hex is needed; without it, Mix and Hex fetch
# the same versions the usual way (a developer's machine with Elixir 1.15+ and Hex).
defmodule Harness.VendoredSCM do
  @moduledoc false
  @behaviour Mix.SCM

  @impl true
  def fetchable?, do: true

  @impl true
  def format(opts), do: "vendored #{Path.basename(opts[:vendored] || "(none)")}"

  @impl true
  def format_lock(_opts), do: nil

  @impl true
  def accepts_options(app, opts) do
    vendor = System.get_env("GENUINE_OBAN_VENDOR")

    cond do
      vendor in [nil, ""] -> nil
      Enum.any?([:path, :git, :github, :in_umbrella], &Keyword.has_key?(opts, &1)) -> nil
      # Every Hex-style declaration is ours, vendored or not: Mix looks up an SCM for each child
      # declaration (Oban's optional and dev-only ones too) before it drops those it never
      # fetches, and an unclaimed one would make it try to install Hex.
      true -> Keyword.put(opts, :vendored, tarball(vendor, app))
    end
  end

  defp tarball(vendor, app) do
    vendor
    |> Path.join("*.tar.gz")
    |> Path.wildcard()
    |> Enum.find(&Regex.match?(~r/^#{app}-\d[^\/]*\.tar\.gz$/, Path.basename(&1)))
  end

  @impl true
  def checked_out?(opts), do: File.exists?(Path.join(opts[:dest], "mix.exs"))

  @impl true
  def lock_status(_opts), do: :ok

  @impl true
  def equal?(opts1, opts2), do: opts1[:vendored] == opts2[:vendored]

  @impl true
  def managers(_opts), do: [:mix]

  @impl true
  def checkout(opts) do
    dest = opts[:dest]
    opts[:vendored] || Mix.raise("#{dest} is needed but no tarball of it is vendored")
    File.rm_rf!(dest)
    File.mkdir_p!(dest)

    case System.cmd("tar", ["xzf", opts[:vendored], "-C", dest, "--strip-components=1"]) do
      {_, 0} -> :ok
      {out, status} -> Mix.raise("unpacking #{opts[:vendored]} failed (#{status}): #{out}")
    end
  end

  @impl true
  def update(opts), do: checkout(opts)
end

Mix.SCM.prepend(Harness.VendoredSCM)

defmodule Harness.MixProject do
  use Mix.Project

  def project do
    [
      app: :harness,
      version: "0.1.0",
      elixir: "~> 1.15",
      start_permanent: false,
      deps: [
        {:oban, "2.23.1"},
        {:postgrex, "~> 0.20"},
        {:jason, "~> 1.4"}
      ]
    ]
  end

  def application do
    [extra_applications: [:logger]]
  end
end
