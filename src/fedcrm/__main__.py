"""`python -m fedcrm` is the `fedcrm` command."""

from fedcrm.cli.main import main

main()
