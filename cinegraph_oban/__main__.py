"""`python -m cinegraph_oban`: the `cinegraph-oban` command line."""

from cinegraph_oban.cli import main

if __name__ == "__main__":
    main(prog_name="cinegraph-oban")
