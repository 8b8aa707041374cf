"""The benchmark keeps working: `scripts/bench.py --smoke` runs end to end (no timings asserted)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install -y nginx-light)")
@pytest.mark.timeout(300)
def test_smoke_run_prints_a_figure_for_each_contender(tmp_path: Path) -> None:
    """`bench.py --smoke` exits 0 and prints records/s for the floor, the exporter and each tool found."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = ["floor", "client", "exporter"] + [tool for tool in ("curl", "aria2c") if shutil.which(tool)]
    table = done.stdout.split("| contender |", 1)[1]
    for name in expected:
        assert f"| {name} | " in table, f"no figure for {name}:\n{done.stdout}"
