"""Cost-aware acquisition (optimizer_options.acquisition: ei_per_second): SMAC learns the wall seconds
per epoch-equivalent beside the cost and prefers configurations that improve more per second."""

from __future__ import annotations

import numpy as np
import pytest


def _space(seed: int):
    from ConfigSpace import ConfigurationSpace, Float

    cs = ConfigurationSpace(seed=seed)
    cs.add([Float("x", (0.0, 1.0)), Float("y", (0.0, 1.0))])
    return cs


def _proposals(tmp_path, kind: str, acquisition: str, n_told: int = 24, n_asked: int = 24) -> np.ndarray:
    """x of the configurations proposed after ``n_told`` results where the expensive half (x > 0.5:
    30x the seconds) is slightly better (cost lower by 0.02)."""
    from smac.runhistory import TrialValue

    from mfhpo.study.optimizers import make_optimizer

    opt = make_optimizer(kind, _space(0), min_budget=1, max_budget=9, eta=3, seed=0, output_dir=tmp_path / acquisition,
                         initial_design=n_told, overwrite=True, acquisition=acquisition)
    xs = []
    for i in range(n_told + n_asked):
        info = opt.ask()
        x, y = float(info.config["x"]), float(info.config["y"])
        b = opt.budget_of(info)
        seconds = (30.0 if x > 0.5 else 1.0) * b
        opt.tell(info, TrialValue(cost=(y - 0.3) ** 2 + 0.02 * (x <= 0.5) + 0.01 * b, time=seconds,
                                  additional_info={"epoch_equivalents": b}), save=False)
        if i >= n_told:
            xs.append(x)
    return np.array(xs)


@pytest.mark.parametrize("kind", ["smac-bo", "smac-mf"])
def test_ei_per_second_prefers_cheap_configurations(tmp_path, kind):
    plain = _proposals(tmp_path / "a", kind, "ei")
    aware = _proposals(tmp_path / "b", kind, "ei_per_second")
    # plain EI goes for the slightly better, expensive half; EI per second for the cheap one
    assert np.mean(aware <= 0.5) >= 0.6
    assert np.mean(aware <= 0.5) - np.mean(plain <= 0.5) >= 0.4


def test_unknown_acquisition_is_one_line_error(tmp_path):
    from mfhpo.errors import MfhpoError
    from mfhpo.study.optimizers import make_optimizer

    with pytest.raises(MfhpoError, match="optimizer_options.acquisition: must be one of ei, ei_per_second"):
        make_optimizer("smac-bo", _space(0), min_budget=1, max_budget=1, output_dir=tmp_path, acquisition="eips")


def test_cost_aware_study_runs_and_resumes(tmp_path):
    """A study with ``acquisition: ei_per_second`` on a real LocalCluster (toy objective): SMAC is told
    each trial's seconds and epoch-equivalents, and a second optimize() resumes from its saved state."""
    import json

    import yaml

    import mfhpo
    from mfhpo.study.trial import TrialStatus

    study = {
        "name": "costaware", "seed": 0, "data": {"train": "demo", "demo_structures": 20},
        "space": {"num_layers": {"low": 1, "high": 2}, "nodes": {"low": 4, "high": 64, "log": True},
                  "lr": {"low": 1e-4, "high": 1e-2, "log": True}},
        "fidelity": {"min_budget": 1, "max_budget": 9, "eta": 3, "epochs": {"min": 1, "max": 9}},
        "budget": {"trials": 12},
        "optimizer_options": {"acquisition": "ei_per_second", "initial_design": 3, "smac_save_s": 0},
        "objective": "toy", "toy": {"sleep_s": 0.05},
        "cluster": {"kind": "local", "workers": 1, "dashboard_port": 0},
    }
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(study))
    s = mfhpo.Study.from_yaml(p, rundir=tmp_path / "run").optimize(trials=12)
    assert len(s.trials) == 12 and all(t.status == TrialStatus.SUCCESS for t in s.trials)
    s.optimize(trials=18)
    assert len(s.trials) == 18 and all(t.status == TrialStatus.SUCCESS for t in s.trials)
    rh = json.loads(next((tmp_path / "run" / "smac").rglob("runhistory.json")).read_text())
    told = [e for e in rh["data"] if e["status"] == 1]
    assert len(told) == 18
    assert all(e["time"] > 0 and e["additional_info"].get("epoch_equivalents", 0) > 0 for e in told)
