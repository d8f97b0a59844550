"""Study file validation, search space -> ConfigSpace conditions, materialize, fidelity mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mfhpo.errors import MfhpoError
from mfhpo.study.config import load_study
from mfhpo.study.fidelity import budget_to_fidelity, rungs
from mfhpo.study.space import build_space_spec, config_to_flat, materialize, to_configspace

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "name": "t",
    "data": {"train": "demo", "demo_structures": 20},
    "space": {
        "num_layers": {"low": 1, "high": 3},
        "nodes": {"low": 8, "high": 128, "log": True},
        "max_order": {"low": 1, "high": 4},
        "groups_2": {"choices": [[1], [1, 2]]},
        "groups_3": {"choices": [[1], [1, 2, 3]]},
        "lr": {"low": 1e-4, "high": 1e-2, "log": True},
        "scheduler": {"choices": ["none", "step", "plateau"]},
        "gamma": {"low": 0.1, "high": 0.9},
        "plateau_patience": {"low": 2, "high": 10},
        "force_coefficient": {"low": 0.01, "high": 1.0, "log": True, "or_zero": True},
        "sigma_count": {"low": 2, "high": 5},
        "sigma_min": {"low": 0.1, "high": 0.5},
        "sigma_max": {"low": 1.0, "high": 3.0},
        "sigma_spacing": {"choices": ["linear", "log"]},
        "cutoff_function": {"choices": ["hard", "cosine"]},
        "channels": {"choices": [["valence"], ["valence", "count", "period"]]},
    },
    "fixed": {"training": {"dtype": "float32"}},
    "fidelity": {"min_budget": 1, "max_budget": 27, "eta": 3, "epochs": {"min": 3, "max": 81},
                 "subset": {"min": 0.25, "max": 1.0, "saturate_at": 9}},
    "budget": {"trials": 10},
}


def write(tmp_path: Path, data: dict, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def bad(tmp_path, mutate) -> str:
    import copy

    d = copy.deepcopy(BASE)
    mutate(d)
    with pytest.raises(MfhpoError) as ei:
        load_study(write(tmp_path, d))
    msg = str(ei.value)
    assert "\n" not in msg and "s.yaml" in msg
    return msg


def test_errors_name_file_key_and_reason(tmp_path):
    assert "space.num_layers.high" in bad(tmp_path, lambda d: d["space"]["num_layers"].update(high=0))
    assert "budgett: unknown key" in bad(tmp_path, lambda d: d.update(budgett=1))
    assert "space.depth: unknown parameter" in bad(tmp_path, lambda d: d["space"].update(depth=3))
    assert "fidelity.epochs" in bad(tmp_path, lambda d: d["fidelity"]["epochs"].update(max=1))
    assert "optimizer" in bad(tmp_path, lambda d: d.update(optimizer="tpe"))
    assert "cluster.bogus" in bad(tmp_path, lambda d: d.update(cluster={"bogus": 1}))
    assert "space.groups_2" in bad(tmp_path, lambda d: d["space"].update(groups_2={"choices": [[3]]}))
    assert "budget" in bad(tmp_path, lambda d: d.update(budget={}))
    assert "space.lr.low" in bad(tmp_path, lambda d: d["space"]["lr"].update(low=0.0))
    assert "space.channels" in bad(tmp_path, lambda d: d["space"].update(channels={"choices": [["valence", "spin"]]}))


def test_cli_prints_one_line_error(tmp_path):
    import subprocess
    import sys

    import copy

    d = copy.deepcopy(BASE)
    d["space"]["num_layers"]["high"] = 0
    p = write(tmp_path, d)
    r = subprocess.run([sys.executable, "-m", "mfhpo.cli", "run", str(p)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and "space.num_layers.high" in lines[-1]
    assert "Traceback" not in r.stderr


def test_conditions_and_materialize(tmp_path):
    study = load_study(write(tmp_path, BASE))
    spec = build_space_spec(study)
    cs = to_configspace(spec, seed=3)
    names = set(cs.keys())
    assert {"nodes_1", "nodes_2", "nodes_3", "groups_2", "groups_3", "force_coefficient_on"} <= names
    assert "groups_4" not in names  # not in the space
    seen_layers = set()
    for config in cs.sample_configuration(60):
        flat = config_to_flat(config)
        nl, mo = flat["num_layers"], flat["max_order"]
        seen_layers.add(nl)
        for k in range(1, 4):
            assert (f"nodes_{k}" in flat) == (k <= nl)
        for k in (2, 3):
            assert (f"groups_{k}" in flat) == (k <= mo)
        assert ("gamma" in flat) == (flat["scheduler"] == "step")
        assert ("plateau_patience" in flat) == (flat["scheduler"] == "plateau")
        cfg = materialize(study, spec, flat)
        assert len(cfg.model.hidden_layers) == nl
        assert sorted(cfg.descriptor.orders) == list(range(mo + 1))
        if mo >= 2:
            assert cfg.descriptor.orders[2].groups == [int(x) for x in str(flat["groups_2"]).split(",")]
        assert len(cfg.descriptor.sigmas) == flat["sigma_count"]
        assert cfg.descriptor.channels == str(flat["channels"]).split(",")
        assert cfg.training.dtype == "float32"  # fixed
        assert (cfg.training.force_coefficient == 0.0) == (flat["force_coefficient_on"] == "off")
        assert cfg.split.val_fraction == study.data.val_fraction
    assert seen_layers == {1, 2, 3}
    assert {len(materialize(study, spec, config_to_flat(c)).descriptor.channels)
            for c in cs.sample_configuration(20)} == {1, 3}
    # log-scale integer nodes
    assert cs["nodes_1"].log


def test_fidelity_mapping(tmp_path):
    study = load_study(write(tmp_path, BASE))
    fid = study.fidelity
    assert rungs(fid) == [1.0, 3.0, 9.0, 27.0]
    b = [budget_to_fidelity(fid, x) for x in rungs(fid)]
    assert b[0].epochs == 3 and b[-1].epochs == 81
    assert [x.epochs for x in b] == sorted(x.epochs for x in b)
    assert b[0].subset_fraction == pytest.approx(0.25)
    assert b[2].subset_fraction == 1.0 and b[3].subset_fraction == 1.0  # saturates at budget 9
    assert 0.25 < b[1].subset_fraction < 1.0
    assert budget_to_fidelity(fid, None).epochs == 81


@pytest.mark.parametrize("name", ["demo.yaml", "oc20.yaml", "md17_aspirin.yaml"])
def test_shipped_studies_validate(name):
    study = load_study(REPO / "spaces" / name)
    spec = build_space_spec(study)
    assert to_configspace(spec).keys()


@pytest.mark.parametrize("name", ["seed_gmp.yaml", "oc20.yaml", "md17_aspirin.yaml"])
def test_shipped_trial_configs_validate(name):
    from mfhpo.config import load_trial_config
    from mfhpo.gmp import GMPSetting

    cfg = load_trial_config(REPO / "configs" / name)
    setting = GMPSetting.from_descriptor(cfg.descriptor, ["C", "H", "O", "Pt"])
    assert setting.nfeat == len(setting.columns) * len(cfg.descriptor.channels)
