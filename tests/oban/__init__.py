"""Oban's side: the installed table, Oban's own statements, genuine Elixir Oban, health (tests of `cinegraph_oban/oban/`)."""
