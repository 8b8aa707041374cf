"""The archive index at ten million ids, alone: `python scripts/bench_scale.py --help`
(the scenario is scripts/benchmarks/scenarios/scale.py; `bench.py --scenario scale` runs it too)."""

import sys

from benchmarks.scenarios.scale import main

if __name__ == "__main__":
    sys.exit(main())
