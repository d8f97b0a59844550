"""``mfhpo demo-data`` writes structures that are none of the demo study's training frames."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np

from mfhpo.demo import STUDY_SEED, write_demo
from mfhpo.study.config import DataSection, load_study

REPO = Path(__file__).resolve().parents[1]


def _key(atoms) -> str:
    h = hashlib.sha1(atoms.numbers.tobytes())
    h.update(np.round(atoms.positions, 6).tobytes())
    return h.hexdigest()


def test_demo_data_default_is_disjoint_from_the_demo_study(tmp_path):
    out = tmp_path / "eval.extxyz"
    r = subprocess.run([sys.executable, "-m", "mfhpo.cli", "demo-data", str(out), "--n", "40"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert r.returncode == 0, r.stderr
    written = {_key(a) for a in ase.io.read(str(out), index=":")}
    assert len(written) == 40
    # the demo study's generated data (its size and seed), and the DataSection's default seed
    demo = load_study(REPO / "spaces" / "demo.yaml").data
    assert demo.train == "demo" and demo.demo_seed == STUDY_SEED
    assert DataSection.model_fields["demo_seed"].default == STUDY_SEED
    n = demo.demo_structures
    write_demo(tmp_path / "study.extxyz", n_structures=n, seed=STUDY_SEED)  # same round trip through extxyz
    study = {_key(a) for a in ase.io.read(str(tmp_path / "study.extxyz"), index=":")}
    assert len(study) == n
    assert not written & study
    # the study's own seed is still available, and says that it overlaps
    r0 = subprocess.run([sys.executable, "-m", "mfhpo.cli", "demo-data", str(tmp_path / "s0.extxyz"), "--n", "10",
                         "--seed", "0"], capture_output=True, text=True, timeout=120)
    assert r0.returncode == 0 and "training data" in r0.stdout
    assert {_key(a) for a in ase.io.read(str(tmp_path / "s0.extxyz"), index=":")} <= study
