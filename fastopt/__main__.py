"""``python -m fastopt``: the command line of :mod:`fastopt.cli`."""
import sys

from fastopt.cli import main

if __name__ == "__main__":
    sys.exit(main())
