"""``python -m fastopt.bench [options]``: the same as ``python -m fastopt bench``."""
import sys

from fastopt.bench.cli import main

sys.exit(main())
