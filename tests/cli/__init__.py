"""The command line (tests of `cinegraph_oban/cli/`)."""
