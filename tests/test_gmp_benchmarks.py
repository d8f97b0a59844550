"""The featurizer benchmark scripts run end to end on tiny generated input on the CPU (what
benchmarks/gpu_check.sh calls on a GPU; AMPTorch's column skipped with a message without its build)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ase.io
from ase.build import fcc111, molecule

ROOT = Path(__file__).resolve().parents[1]


def _inputs(tmp_path):
    slab = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    slab.rattle(0.05, seed=1)
    mol = molecule("CH3CH2OH")
    mol.center(vacuum=4.0)
    data = tmp_path / "tiny.traj"
    ase.io.write(str(data), [slab, mol, slab])
    (tmp_path / "g.g").write_text("4.0 1.0\n-0.5 3.0\n")
    setting = tmp_path / "setting.json"
    setting.write_text(json.dumps({
        "fp_scheme": "gmp", "elements": ["C", "Cu", "H", "O"],
        "fp_params": {"MCSHs": {"0": {"groups": [1], "sigmas": [0.5, 1.0]}, "2": {"groups": [1, 2], "sigmas": [0.5]}},
                      "cutoff": 4.0, "atom_gaussians": {el: "g.g" for el in ("C", "Cu", "H", "O")}}}))
    env = {k: v for k, v in os.environ.items() if k != "AMPTORCH_GMP"}
    env.update(OMP_NUM_THREADS="1", MFHPO_SHARED=str(tmp_path / "no-shared"),
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return data, setting, env


def test_device_benchmark_cpu_path(tmp_path):
    data, setting, env = _inputs(tmp_path)
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "featurize_device.py"), "--device", "cpu",
                        "--data", str(data), "--setting", str(setting), "--n", "3", "--cpu-n", "2", "--repeats", "1"],
                       capture_output=True, text=True, env=env, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout.strip().splitlines()[-1].removeprefix("RESULT "))
    assert res["device"] == "cpu" and res["device_atoms"] == 2 * 8 + 9 and res["cpu_atoms"] == 8 + 9
    for mode in ("plain", "derivatives"):
        assert res[mode]["cpu_atoms_per_s"] > 0 and res[mode]["device_atoms_per_s"] > 0
        assert res[mode]["max_rel_diff"] == 0.0  # the same computation on the same device


def test_featurize_benchmark_without_amptorch(tmp_path):
    data, setting, env = _inputs(tmp_path)
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "featurize.py"), "--data", str(data),
                        "--settings", str(setting), "--rounds", "1", "--cli"],
                       capture_output=True, text=True, env=env, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "AMPTorch: no build found" in p.stdout and "AMPTorch skipped" in p.stdout
    assert "mfhpo featurize" in p.stdout and "file" in p.stdout
