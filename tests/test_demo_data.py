"""``mfhpo demo-data`` writes structures that are none of the demo study's training frames."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import ase.io
import numpy as np

from mfhpo.demo import STUDY_SEED, write_demo
from mfhpo.study.config import DataSection


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
    # a study's generated data: the spaces/demo.yaml size and the DataSection's default seed
    assert DataSection.model_fields["demo_seed"].default == STUDY_SEED
    write_demo(tmp_path / "study.extxyz", n_structures=150, seed=STUDY_SEED)  # same round trip through extxyz
    study = {_key(a) for a in ase.io.read(str(tmp_path / "study.extxyz"), index=":")}
    assert len(study) == 150
    assert not written & study
    # the study's own seed is still available, and says that it overlaps
    r0 = subprocess.run([sys.executable, "-m", "mfhpo.cli", "demo-data", str(tmp_path / "s0.extxyz"), "--n", "10",
                         "--seed", "0"], capture_output=True, text=True, timeout=120)
    assert r0.returncode == 0 and "training data" in r0.stdout
    assert {_key(a) for a in ase.io.read(str(tmp_path / "s0.extxyz"), index=":")} <= study
