"""The job model (tests of `cinegraph_oban/model/`)."""
