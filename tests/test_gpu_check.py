"""benchmarks/gpu_check.sh on its CPU path with tiny sizes: every part runs and reports a number
(GMP speed, training throughput energy-only and with forces, a 2-trial study through `mfhpo run`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_quick_runs_every_part(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu", "--quick", "--workdir",
                        str(tmp_path)], capture_output=True, text=True, timeout=240, env=env)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    assert "device cpu" in out and "generated EMT slabs" in out
    for label in ("no derivatives", "with derivatives"):
        m = re.search(rf"gmp {label}\s*: cpu\s+(\d+) atoms/s .* one CPU core\s+(\d+) atoms/s .* ratio x([\d.]+)", out)
        assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0, out
    for label in ("energy-only", "with forces"):
        m = re.search(rf"train {label}\s+batch\s+\d+:\s+(\d+) structures/s per epoch", out)
        assert m and int(m.group(1)) > 0, out
    assert len(re.findall(r"study trial \d: SUCCESS, device cpu", out)) == 2, out
    assert "study: 2/2 trials SUCCESS" in out
    assert (tmp_path / "run" / "trials.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_gpu_check_without_cuda_says_so_in_one_line():
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--parts", "gmp"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stdout.strip().splitlines() == [
        "gpu_check: no CUDA device visible (torch.cuda.is_available() is False); use --cpu"]
