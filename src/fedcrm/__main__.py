"""`python -m fedcrm` is the `fedcrm` command."""

from fedcrm.cli import main

main()
