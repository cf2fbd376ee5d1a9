"""Import outcomes in job meta: records, merge, query builders, readers (tests of `cinegraph_oban/meta/`)."""
