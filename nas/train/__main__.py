"""`python -m nas.train`."""

from nas.train import main

main()
