"""The migration that retires the legacy tables (tests of `cinegraph_oban/migration/`)."""
