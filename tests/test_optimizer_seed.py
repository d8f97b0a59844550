"""A seeded optimizer proposes the same configurations in every process (Python's hash seed varies)."""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys, tempfile
from ConfigSpace import ConfigurationSpace, Float, Integer, Categorical
from smac.runhistory import TrialValue
from mfhpo.study.optimizers import make_optimizer
cs = ConfigurationSpace(seed=0)
cs.add([Float("x", (0.0, 1.0)), Float("y", (1e-3, 1.0), log=True), Integer("n", (1, 64)), Categorical("a", ["p", "q", "r"])])
kind = sys.argv[1]
opt = make_optimizer(kind, cs, min_budget=1, max_budget=9, eta=3, seed=0, output_dir=tempfile.mkdtemp(),
                     initial_design=3, min_trials=1)
out = []
for _ in range(14):
    info = opt.ask()
    c = dict(info.config)
    cost = (c["x"] - 0.3) ** 2 + abs(c["y"] - 0.1) + c["n"] / 640 + (c["a"] == "q") * 0.2
    opt.tell(info, TrialValue(cost=cost / (info.budget or 1.0)))
    out.append([sorted((k, str(v)) for k, v in c.items()), info.budget])
print(json.dumps(out))
"""


@pytest.mark.parametrize("kind", ["smac-mf", "smac-bo"])
def test_same_seed_same_proposals_across_hash_seeds(kind):
    runs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", SCRIPT, kind], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert len(runs[0]) == 14
    assert runs[0] == runs[1]
