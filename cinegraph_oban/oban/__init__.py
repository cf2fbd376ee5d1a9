"""Oban's side of the table: installing and detecting the `oban_jobs` table as Oban's migrations
make it (`table`, `installation`), Oban's own job statements for tests (`engine`), and the
table's health (`health`). `*_async` modules are the sources of their generated sync twins."""
