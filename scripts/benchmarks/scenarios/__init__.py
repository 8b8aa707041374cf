"""The scenarios, one module each, in the order `--scenario all` runs them and `--help` lists them.

A scenario is a function `run(setup, results) -> bool` that prints its figures, puts its JSON
section into `results[name]` (README tables under "tables", see `results.record_tables`) and says
whether every target was met, plus, if it has options of its own, `add_arguments(parser)`, which
adds them in a `--scenario NAME` help group. To add one: write its module and add a line to
SCENARIOS.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any, Final

from benchmarks.harness import Setup
from benchmarks.scenarios import compress, dryrun, latency, memory, pacing, rate, scale, throughput


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Setup, dict[str, Any]], bool]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    needs_nginx: bool = True


SCENARIOS: Final = (
    Scenario("throughput", throughput.throughput_scenario),
    Scenario("rate", rate.rate_scenario, rate.add_arguments),
    Scenario("latency", latency.latency_scenario, latency.add_arguments),
    Scenario("memory", memory.memory_scenario, memory.add_arguments),
    Scenario("pacing", pacing.pacing_scenario, pacing.add_arguments, needs_nginx=False),
    Scenario("dryrun", dryrun.dryrun_scenario, needs_nginx=False),
    Scenario("compress", compress.compress_scenario, compress.add_arguments, needs_nginx=False),
    Scenario("scale", scale.scale_scenario, scale.add_arguments, needs_nginx=False),
)


def needs_nginx(choice: str) -> bool:
    """Whether `--scenario choice` (a name or "all") starts nginx."""
    return any(s.needs_nginx for s in SCENARIOS if choice in (s.name, "all"))
