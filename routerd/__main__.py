"""`python -m routerd` runs the `routerd` command."""

from routerd.cli import main

main()
