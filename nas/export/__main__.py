"""`python -m nas.export`."""

from nas.export.cli import main

main()
