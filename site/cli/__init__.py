"""The `balsam` command line: one module per command group."""
