"""The insert core and its two faces (tests of `cinegraph_oban/insert/`)."""
