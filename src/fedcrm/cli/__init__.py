"""The `fedcrm` command line: one module per sub-app, the root in `fedcrm.cli.main`."""
