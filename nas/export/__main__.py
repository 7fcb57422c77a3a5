"""`python -m nas.export`."""

from nas.export.command import main

main()
