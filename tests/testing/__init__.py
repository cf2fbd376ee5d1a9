"""The testing helpers and the pytest plugin (tests of `cinegraph_oban/testing/`)."""
