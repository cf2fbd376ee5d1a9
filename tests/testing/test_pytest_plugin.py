"""The pytest plugin, used the way another project's test suite would use it (pytester)."""

from __future__ import annotations

import os

import pytest

from conftest import ObanDatabase

pytest_plugins = ["pytester"]


def test_plugin_fixtures_and_assertions(pytester: pytest.Pytester, oban: ObanDatabase) -> None:
    server = oban.dsn.rsplit("/", 1)[0] + "/postgres"
    pytester.makepyfile(
        """
        import os

        import pytest
        from cinegraph_oban import Job
        from cinegraph_oban.testing.assertions import all_enqueued, assert_enqueued, refute_enqueued

        W = "Cinegraph.Workers.TMDbDetailsWorker"

        def test_default_layout(oban_database):
            assert oban_database.version == 14 and oban_database.prefix == "public"
            oban_database.oban.insert(Job.new(W, {"tmdb_id": 278}, meta={"import_type": "canonical"}))
            assert_enqueued(oban_database.conn, worker="Elixir." + W, args={"tmdb_id": 278}, meta={"import_type": "canonical"})
            refute_enqueued(oban_database.conn, worker=W, args={"tmdb_id": 1})
            assert [j.args for j in all_enqueued(oban_database.conn, queue="tmdb")] == [{"tmdb_id": 278}]

        @pytest.mark.oban(version=11, prefix="jobs", legacy_tables=True, legacy_rows=25)
        def test_marker_layout(oban_database):
            assert oban_database.oban.table().version == 11
            count = oban_database.conn.execute("SELECT count(*) FROM failed_imdb_lookups").fetchone()[0]
            assert count == 25
            oban_database.conn.execute("DELETE FROM failed_imdb_lookups")

        @pytest.mark.oban(version=11, prefix="jobs", legacy_tables=True, legacy_rows=25)
        def test_the_same_layout_again_is_as_made(oban_database):
            count = oban_database.conn.execute("SELECT count(*) FROM failed_imdb_lookups").fetchone()[0]
            assert count == 25

        def test_failing_assertion_explains(oban_database):
            with pytest.raises(AssertionError, match="expected a job enqueued with worker='X.Y'"):
                assert_enqueued(oban_database.conn, worker="X.Y")

        def test_each_test_gets_a_fresh_database(oban_database):
            assert all_enqueued(oban_database.conn) == []

        def test_the_option_names_the_oban_version(oban_database):
            assert oban_database.oban.oban_version == "2.23.1"

        @pytest.mark.oban(oban_version="2.22")
        def test_the_marker_names_it_for_one_test(oban_database):
            assert oban_database.oban.oban_version == "2.22"

        @pytest.mark.oban(prefix="p" * 70)
        def test_a_prefix_postgres_would_cut_is_an_error(oban_database):
            pass

        def test_each_layout_is_installed_once_into_a_template(oban_database):
            templates = oban_database.conn.execute(
                "SELECT count(*) FROM pg_database WHERE datname LIKE %s",
                [f"cinegraph_oban_fixture_{os.getpid()}_template_%"],
            ).fetchone()
            assert templates == (2,)  # (14, public) and (11, jobs) with the legacy tables
        """
    )
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", f"--cinegraph-oban-dsn={server}", "--cinegraph-oban-version=2.23.1"
    )
    result.assert_outcomes(passed=8, errors=1)
    # The error is the prefix check's; the template count after it saw two: the bad prefix's
    # template was dropped when its install failed.
    result.stdout.fnmatch_lines(["*test_a_prefix_postgres_would_cut_is_an_error*", "*63*"])
    # The plugin's databases of this process (the run was in-process): another run's are its own.
    leftovers = oban.conn.execute(
        "SELECT count(*) FROM pg_database WHERE starts_with(datname, %s)", [f"cinegraph_oban_fixture_{os.getpid()}_"]
    ).fetchone()
    assert leftovers == (0,)
