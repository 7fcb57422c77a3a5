"""`python -m nas.search`."""

from nas.search import main

main()
