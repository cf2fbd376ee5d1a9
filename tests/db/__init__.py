"""Connections and identifiers (tests of `cinegraph_oban/db/` and `sql/`)."""
