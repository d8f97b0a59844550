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
