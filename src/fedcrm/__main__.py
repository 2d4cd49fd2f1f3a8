"""`python -m fedcrm` is the `fedcrm` command."""

from fedcrm.cli.app import main

main()
