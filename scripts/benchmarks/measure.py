"""Process measurement: each contender reaped by a small launcher, so its CPU and RSS are its own."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from benchmarks.common import MB, BenchError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_s(pid: int) -> float:
    """user+sys CPU seconds of a live process, from /proc (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all CPUs have spent busy since boot (/proc/stat), to spot other load."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """Direct children of pid (nginx's workers), by scanning /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                children.append(int(entry.name))
    return children


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProcessResult:
    """What the kernel says one child process cost, from spawn to exit."""

    exit_code: int
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_bytes: int
    started_epoch: float

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


# Runs one contender and reports its rusage. Why a launcher: at exec, Linux carries the old
# address space's high-water mark into the new program's ru_maxrss, and subprocess spawns with
# vfork, whose old address space is the benchmark's own (a million-id list makes that 150 MB).
# Forked from this small interpreter instead, a contender's peak RSS is its own (floor: ~5 MB).
LAUNCHER: Final = """\
import json, os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
started_epoch, started = time.time(), time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall_s = time.perf_counter() - started
code = os.waitstatus_to_exitcode(status)
with open(report, "w") as handle:
    json.dump({"exit_code": code, "wall_s": wall_s, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
               "maxrss_bytes": usage.ru_maxrss * 1024, "started_epoch": started_epoch}, handle)
"""


def run_measured(argv: Sequence[str], *, env: dict[str, str], log_path: Path) -> ProcessResult:
    """Run argv to completion and return its own wall time, CPU (user, sys) and peak RSS.

    Each contender is a child of a launcher (LAUNCHER) that reaps it with wait4, so the figures
    are that process's alone; the launcher leads a new process group, so an interrupted
    benchmark can end the contender with it.
    """
    report = log_path.with_name(log_path.name + ".rusage.json")
    report.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(report), *argv]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            launcher, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            proc.wait()
        except BaseException:  # Ctrl-C or SIGTERM of the benchmark: leave no contender behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    try:
        return ProcessResult(**json.loads(report.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise BenchError(
            f"the launcher of {argv[0]} failed (exit {proc.returncode}): {tail(log_path)}"
        ) from exc


def tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Measurement:
    """One contender's run over the workload; `error` set if its result was wrong."""

    contender: str
    repetition: int
    concurrency: int
    records: int
    bytes: int
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_bytes: int
    server_cpu_s: float
    others_cpu_s: float
    """CPU the rest of the machine used meanwhile: other people's work makes a run noisy."""
    error: str | None = None

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def records_per_s(self) -> float:
        return self.records / self.wall_s

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.wall_s

    @property
    def cpu_s_per_10k(self) -> float:
        return self.cpu_s / max(1, self.records) * 10_000

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(
            cpu_s=self.cpu_s,
            records_per_s=self.records_per_s,
            mb_per_s=self.mb_per_s,
            cpu_s_per_10k=self.cpu_s_per_10k,
        )
        return data
