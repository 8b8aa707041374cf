"""Run the benchmark: `python scripts/bench.py --help` (the package is scripts/benchmarks/)."""

import sys

from benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main())
