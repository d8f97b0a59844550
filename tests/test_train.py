"""End-to-end training tests on the generated demo data (real GMP featurizer, tiny networks)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mfhpo.config import Fidelity, TrialConfig
from mfhpo.data import Dataset
from mfhpo.errors import MfhpoError


def small_cfg(**training) -> TrialConfig:
    d = {
        "descriptor": {"orders": {0: {"groups": [1]}, 1: {"groups": [1]}, 2: {"groups": [1, 2]}},
                       "sigmas": [0.5, 1.0, 1.8], "cutoff": 5.0},
        "model": {"hidden_layers": [12, 8]},
        "training": {"epochs": 4, "lr": 0.01, "batch_size": 8, "dtype": "float64", "device": "cpu", **training},
        "split": {"val_fraction": 0.25, "seed": 1},
        "seed": 3,
    }
    return TrialConfig.model_validate(d)


@pytest.fixture(scope="module")
def demo_ds(demo_images):
    return Dataset.from_images(demo_images[:40], source="demo")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from mfhpo.gmp.cache import FeatureCache

    return FeatureCache(tmp_path_factory.mktemp("fpcache"))


def run(cfg, ds, tmp_path, name, budget=None, **kw):
    from mfhpo.train import train

    return train(cfg, ds, budget or Fidelity(epochs=cfg.training.epochs), tmp_path / name, progress=False, **kw)


def strip_time(curve):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in curve]


def test_train_writes_outputs_and_learns(demo_ds, cache, tmp_path):
    cfg = small_cfg(epochs=40, scheduler="step", step_size=5, gamma=0.8)
    cfg.split.test_fraction = 0.2
    res = run(cfg, demo_ds, tmp_path, "a", cache=cache, eval_test=True)
    out = tmp_path / "a"
    for f in ("metrics.json", "learning_curve.csv", "checkpoint.pt", "train.log"):
        assert (out / f).exists(), f
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == {"train", "val", "test"}
    from mfhpo.metrics import METRIC_NAMES

    assert set(METRIC_NAMES) <= set(m["val"])
    assert res.epochs_run == 40 and len(res.learning_curve) == 40
    assert res.n_train == 22 and m["val"]["n_structures"] == 10 and m["test"]["n_structures"] == 8
    v = m["val"]
    assert v["energy_mae"] < v["baseline_energy_mae"]
    assert res.learning_curve[-1]["train_loss"] < res.learning_curve[0]["train_loss"]
    assert res.learning_curve[5]["lr"] == pytest.approx(0.008)  # StepLR after 5 epochs
    assert math.isfinite(v["force_mae"])  # forces are evaluated even when training energy only
    # the reported model is the best-validation epoch
    best = min(res.learning_curve, key=lambda r: r["val_loss"])
    assert res.best_epoch == best["epoch"]
    assert v["energy_mae"] == pytest.approx(best["val_energy_mae"], rel=1e-9)
    steps = ("split_s", "featurize_s", "setup_s", "fit_s", "evaluate_s", "save_s")
    assert set(res.timings) == {*steps, "train_s", "total_s"}
    assert all(res.timings[k] >= 0 for k in steps)
    # the steps add up to the whole training, and the epochs (fit) hold the epoch loop's own time
    assert sum(res.timings[k] for k in steps) == pytest.approx(res.timings["total_s"], abs=0.05)
    assert res.timings["fit_s"] >= res.timings["train_s"] > 0


def test_force_training_beats_zero_force(demo_ds, cache, tmp_path):
    cfg = small_cfg(epochs=30, force_coefficient=20.0, lr=0.005, scheduler="step", step_size=10)
    res = run(cfg, demo_ds, tmp_path, "f", cache=cache)
    for split in ("train", "val"):
        m = res.metrics[split]
        assert m["force_mae"] < 0.95 * m["baseline_force_mae"], split


def test_same_seed_same_result_and_checkpoint_roundtrip(demo_ds, cache, tmp_path):
    cfg = small_cfg(epochs=3, force_coefficient=0.1)
    cfg.model.dropout = 0.1
    r1 = run(cfg, demo_ds, tmp_path, "r1", cache=cache)
    r2 = run(cfg, demo_ds, tmp_path, "r2", cache=cache)
    assert r1.metrics == r2.metrics
    assert strip_time(r1.learning_curve) == strip_time(r2.learning_curve)
    cfg2 = small_cfg(epochs=3, force_coefficient=0.1)
    cfg2.model.dropout = 0.1
    cfg2.seed = 4
    r3 = run(cfg2, demo_ds, tmp_path, "r3", cache=cache)
    assert r3.metrics["val"]["energy_mae"] != r1.metrics["val"]["energy_mae"]

    # reload the checkpoint: predictions reproduce the stored validation metrics exactly
    from mfhpo.calculator import MfhpoCalculator
    from mfhpo.checkpoint import load_potential
    from mfhpo.metrics import dataset_metrics, predict
    from mfhpo.train import make_split

    pot = load_potential(r1.checkpoint_path, device="cpu")
    val = demo_ds.subset(make_split(cfg, demo_ds).val)
    e, f = predict(pot, val)
    m = dataset_metrics(val, e, f, pot.reference_energies)
    for k in ("energy_mae", "force_mae", "force_mae_free", "baseline_energy_mae"):
        assert m[k] == pytest.approx(r1.metrics["val"][k], rel=1e-12, abs=1e-14)
    atoms = val.images[0].copy()
    atoms.calc = MfhpoCalculator(r1.checkpoint_path)
    assert atoms.get_potential_energy() == pytest.approx(e[0], rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(apply_constraint=False), f[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scheduler", ["step", "plateau"])
def test_continuation_equals_straight_run(demo_ds, cache, tmp_path, scheduler):
    cfg = small_cfg(epochs=6, force_coefficient=0.1, scheduler=scheduler, step_size=2, plateau_patience=1,
                    optimizer="adamw", weight_decay=1e-4)
    cfg.model.dropout = 0.05
    budget_lo, budget_hi = Fidelity(epochs=2, subset_fraction=0.6), Fidelity(epochs=5, subset_fraction=0.6)
    straight = run(cfg, demo_ds, tmp_path, "straight", budget_hi, cache=cache)
    lo = run(cfg, demo_ds, tmp_path, "lo", budget_lo, cache=cache)
    cont = run(cfg, demo_ds, tmp_path, "cont", budget_hi, cache=cache, init_checkpoint=lo.checkpoint_path)
    assert cont.warm_start["used"] is True and cont.warm_start["from_epoch"] == 2
    assert cont.epochs_run == straight.epochs_run == 5
    assert cont.metrics == straight.metrics
    assert strip_time(cont.learning_curve) == strip_time(straight.learning_curve)


def test_growing_subset_continues_exactly(demo_ds, cache, tmp_path):
    """A growing subset (curriculum fidelity): epochs train on their phase's nested subset; a checkpoint
    of a schedule's prefix continues to the full schedule bitwise like the straight run, so a study's
    promotions all warm start; scalers and references come from the first phase's subset."""
    cfg = small_cfg(epochs=6, force_coefficient=0.1, scheduler="plateau", plateau_patience=1)
    sched = [(0, 0.4), (2, 0.7), (4, 1.0)]
    lo = Fidelity(epochs=2, subset_fraction=0.4, subset_schedule=sched[:1])
    mid = Fidelity(epochs=4, subset_fraction=0.7, subset_schedule=sched[:2])
    hi = Fidelity(epochs=6, subset_fraction=1.0, subset_schedule=sched)
    assert hi.epoch_equivalents() == pytest.approx(2 * 0.4 + 2 * 0.7 + 2 * 1.0)
    assert [hi.fraction_at(e) for e in range(6)] == [0.4, 0.4, 0.7, 0.7, 1.0, 1.0]
    straight = run(cfg, demo_ds, tmp_path, "straight", hi, cache=cache)
    r_lo = run(cfg, demo_ds, tmp_path, "lo", lo, cache=cache)
    r_mid = run(cfg, demo_ds, tmp_path, "mid", mid, cache=cache, init_checkpoint=r_lo.checkpoint_path)
    r_hi = run(cfg, demo_ds, tmp_path, "hi", hi, cache=cache, init_checkpoint=r_mid.checkpoint_path)
    assert r_mid.warm_start["used"] and r_hi.warm_start["used"] and r_hi.warm_start["from_epoch"] == 4
    assert r_hi.metrics == straight.metrics
    assert strip_time(r_hi.learning_curve) == strip_time(straight.learning_curve)
    # the first two epochs are those of a plain 0.4-subset training (same scalers, same batches)
    plain = run(cfg, demo_ds, tmp_path, "plain", Fidelity(epochs=2, subset_fraction=0.4), cache=cache)
    assert strip_time(plain.learning_curve) == strip_time(straight.learning_curve[:2])
    assert r_lo.metrics == plain.metrics
    # the growing subset trains differently from a constant full one, and a constant-subset
    # checkpoint continues into a schedule that starts with its subset
    full = run(cfg, demo_ds, tmp_path, "full", Fidelity(epochs=6), cache=cache)
    assert full.metrics["val"]["energy_mae"] != straight.metrics["val"]["energy_mae"]
    cont = run(cfg, demo_ds, tmp_path, "cont", mid, cache=cache, init_checkpoint=plain.checkpoint_path)
    assert cont.warm_start["used"] and cont.metrics == r_mid.metrics
    # a checkpoint whose epochs trained on another subset is refused, with the epoch named
    other = run(cfg, demo_ds, tmp_path, "other", Fidelity(epochs=2, subset_fraction=0.7), cache=cache)
    refused = run(cfg, demo_ds, tmp_path, "refused", mid, cache=cache, init_checkpoint=other.checkpoint_path)
    assert not refused.warm_start["used"] and "epoch 1" in refused.warm_start["reason"]
    with pytest.raises(ValueError):
        Fidelity(epochs=4, subset_fraction=0.7, subset_schedule=[(0, 0.7), (2, 0.4)])


def test_cosine_over_fixed_epochs_continues_exactly(demo_ds, cache, tmp_path):
    """``training.schedule_epochs`` (a study's ``fidelity.schedule_epochs: top``): the cosine schedule
    spans those epochs whatever the budget, so a shorter training's checkpoint continues exactly."""
    cfg = small_cfg(epochs=5, scheduler="cosine", schedule_epochs=5)
    straight = run(cfg, demo_ds, tmp_path, "straight", Fidelity(epochs=5), cache=cache)
    lo = run(cfg, demo_ds, tmp_path, "lo", Fidelity(epochs=2), cache=cache)
    cont = run(cfg, demo_ds, tmp_path, "cont", Fidelity(epochs=5), cache=cache, init_checkpoint=lo.checkpoint_path)
    assert cont.warm_start["used"] and cont.metrics == straight.metrics
    assert [r["lr"] for r in lo.learning_curve] == [r["lr"] for r in straight.learning_curve[:2]]
    short = run(small_cfg(epochs=2, scheduler="cosine"), demo_ds, tmp_path, "short", Fidelity(epochs=2), cache=cache)
    assert short.learning_curve[1]["lr"] < lo.learning_curve[1]["lr"]  # its own 2 epochs: decays faster


def test_incompatible_warm_start_retrains(demo_ds, cache, tmp_path):
    cfg = small_cfg(epochs=2, scheduler="cosine")
    lo = run(cfg, demo_ds, tmp_path, "lo", Fidelity(epochs=1), cache=cache)
    hi = run(cfg, demo_ds, tmp_path, "hi", Fidelity(epochs=2), cache=cache, init_checkpoint=lo.checkpoint_path)
    assert hi.warm_start["used"] is False and "cosine" in hi.warm_start["reason"]
    cfg2 = small_cfg(epochs=2)
    lo2 = run(cfg2, demo_ds, tmp_path, "lo2", Fidelity(epochs=1, subset_fraction=0.5), cache=cache)
    hi2 = run(cfg2, demo_ds, tmp_path, "hi2", Fidelity(epochs=2, subset_fraction=1.0), cache=cache,
              init_checkpoint=lo2.checkpoint_path)
    assert hi2.warm_start["used"] is False and "subset" in hi2.warm_start["reason"]
    straight = run(cfg2, demo_ds, tmp_path, "s2", Fidelity(epochs=2), cache=cache)
    assert hi2.metrics == straight.metrics
    cfg3 = small_cfg(epochs=2, lr=0.02)
    hi3 = run(cfg3, demo_ds, tmp_path, "hi3", Fidelity(epochs=2, subset_fraction=0.5), cache=cache,
              init_checkpoint=lo2.checkpoint_path)
    assert hi3.warm_start["used"] is False and "configuration" in hi3.warm_start["reason"]


def test_bad_inputs_one_line_errors(demo_images, demo_ds, cache, tmp_path):
    from mfhpo.checkpoint import load_checkpoint
    from mfhpo.data import Split

    no_forces = Dataset(images=demo_ds.images, energies=demo_ds.energies, forces=None, free=demo_ds.free)
    with pytest.raises(MfhpoError, match="force_coefficient .* needs forces") as ei:
        run(small_cfg(force_coefficient=1.0), no_forces, tmp_path, "nf")
    assert "\n" not in str(ei.value)
    empty = Split(np.zeros(0, np.int64), np.arange(5), np.zeros(0, np.int64))
    with pytest.raises(MfhpoError, match="empty training split"):
        run(small_cfg(), demo_ds, tmp_path, "empty", split=empty)
    # checkpoint from an incompatible format version
    res = run(small_cfg(epochs=1), demo_ds, tmp_path, "ok", cache=cache)
    ck = torch.load(res.checkpoint_path, weights_only=True)
    ck["format_version"] = 999
    bad = tmp_path / "old.pt"
    torch.save(ck, bad)
    with pytest.raises(MfhpoError, match="format version 999") as ei:
        load_checkpoint(bad)
    assert "\n" not in str(ei.value)
    with pytest.raises(MfhpoError, match="not an mfhpo checkpoint|not a readable"):
        (tmp_path / "junk.pt").write_bytes(b"nonsense")
        load_checkpoint(tmp_path / "junk.pt")
    # unknown elements at evaluation
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from mfhpo.checkpoint import load_potential

    a = Atoms("Fe2", positions=[(0, 0, 0), (0, 0, 2)])
    a.calc = SinglePointCalculator(a, energy=-1.0, forces=np.zeros((2, 3)))
    with pytest.raises(MfhpoError, match="element Fe was not in the training data"):
        load_potential(res.checkpoint_path).predict([a])


def test_cli_train_and_evaluate(demo_file, tmp_path, capsys):
    from mfhpo.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("descriptor: {sigmas: [0.6, 1.4], cutoff: 4.5}\nmodel: {hidden_layers: [8]}\n"
                   "training: {epochs: 2, device: cpu}\n")
    with pytest.raises(SystemExit) as ex:
        main(["train", str(cfg), "--data", str(demo_file), "--out", str(tmp_path / "o"), "--subset", "0.3"])
    assert ex.value.code in (0, None)
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["val"]["n_structures"] == 12
    capsys.readouterr()
    with pytest.raises(SystemExit) as ex:
        main(["evaluate", str(tmp_path / "o" / "checkpoint.pt"), str(demo_file), "--json", "--device", "cpu"])
    assert ex.value.code in (0, None)
    m = json.loads(capsys.readouterr().out)
    assert m["n_structures"] == 60 and m["force_mae"] > 0 and m["baseline_force_mae_free"] > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: {epochz: 3}\n")
    with pytest.raises(SystemExit) as ex:
        main(["train", str(bad), "--data", str(demo_file), "--out", str(tmp_path / "x")])
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "epochz" in err and "\n" not in err


@pytest.mark.parametrize("cutoff_function,channels", [("hard", ["valence"]), ("cosine", ["valence"]),
                                                      ("cosine", ["valence", "count", "period"])])
def test_forces_match_finite_differences(demo_ds, tmp_path, cutoff_function, channels):
    """Trained potential, reloaded from its checkpoint: F = -dE/dr to finite-difference accuracy
    (float64), hard and cosine cutoff, one or three density channels."""
    from mfhpo.checkpoint import load_potential

    cfg = small_cfg(epochs=2)
    cfg.descriptor.cutoff_function = cutoff_function
    cfg.descriptor.channels = channels
    cfg.model.activation = "softplus"
    ds = demo_ds.subset(range(12))
    res = run(cfg, ds, tmp_path, cutoff_function)
    pot = load_potential(res.checkpoint_path)
    assert pot.setting.channels == tuple(channels)
    atoms = ds.images[0].copy()
    _, f = pot.predict([atoms])
    h = 1e-4
    rng = np.random.default_rng(0)
    for a in rng.choice(len(atoms), 4, replace=False):
        for c in range(3):
            p, m = atoms.copy(), atoms.copy()
            p.positions[a, c] += h
            m.positions[a, c] -= h
            ep, _ = pot.predict([p], forces=False)
            em, _ = pot.predict([m], forces=False)
            fd = -(ep[0] - em[0]) / (2 * h)
            assert f[0][a, c] == pytest.approx(fd, abs=2e-6, rel=1e-5)


def test_md_energy_conservation(demo_ds, cache, tmp_path):
    """Short NVE run with the ASE calculator: total energy drift stays small."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from mfhpo.calculator import MfhpoCalculator

    cfg = small_cfg(epochs=3, force_coefficient=0.1)
    cfg.descriptor.cutoff_function = "cosine"
    res = run(cfg, demo_ds, tmp_path, "md", cache=cache)
    atoms = demo_ds.images[0].copy()
    atoms.set_constraint()
    atoms.calc = MfhpoCalculator(res.checkpoint_path)
    MaxwellBoltzmannDistribution(atoms, temperature_K=150, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    etot = []
    dyn.attach(lambda: etot.append(atoms.get_total_energy()), interval=1)
    dyn.run(40)
    etot = np.array(etot)
    ekin0 = 1.5 * len(atoms) * units.kB * 150
    assert np.all(np.isfinite(etot))
    assert np.abs(etot - etot[0]).max() < 0.02 * ekin0 + 1e-3


@pytest.mark.parametrize("per_element", [True, False])
def test_feature_scaler_per_element_or_global(demo_ds, cache, tmp_path, per_element):
    from mfhpo.checkpoint import load_potential

    cfg = small_cfg(epochs=1, scale_per_element=per_element)
    res = run(cfg, demo_ds, tmp_path, f"scale{per_element}", cache=cache)
    offsets = load_potential(res.checkpoint_path, device="cpu").potential.feat_offset
    same = bool(torch.allclose(offsets, offsets[:1].expand_as(offsets)))
    assert same is (not per_element)


def test_checkpoint_records_featurize_options_and_a_typed_training_state(demo_ds, tmp_path):
    """The checkpoint says how features were chunked (truthfully) and stores a TrainingState that reads
    back; checkpoints from before those records read as the chunking their trainings used."""
    from mfhpo.checkpoint import TrainingState, featurize_options_of, load_checkpoint
    from mfhpo.gmp import FeaturizeOptions

    ds = demo_ds.subset(range(16))
    shared = run(small_cfg(epochs=2), ds, tmp_path, "shared", featurize=FeaturizeOptions(share_chunks=True))
    own = run(small_cfg(epochs=2), ds, tmp_path, "own", featurize=FeaturizeOptions(share_chunks=False))
    ck_s, ck_o = load_checkpoint(shared.checkpoint_path), load_checkpoint(own.checkpoint_path)
    assert ck_s["gmp_chunks"] == "shared" and featurize_options_of(ck_s) == FeaturizeOptions(True, layout="blocked")
    assert ck_o["gmp_chunks"] == "per-structure" and featurize_options_of(ck_o) == FeaturizeOptions(False, layout="blocked")
    assert shared.metrics["val"]["energy_mae"] == pytest.approx(own.metrics["val"]["energy_mae"], rel=1e-6)
    state = TrainingState.from_checkpoint(ck_o)
    assert state.epochs_run == 2 and len(state.learning_curve) == 2 and state.best_epoch == own.best_epoch
    assert state.to_record().keys() == ck_o["resume"].keys()
    assert TrainingState.from_checkpoint({**ck_o, "resume": None}) is None
    assert shared.metrics == own.metrics  # the blocked layout: bitwise the same features either way
    default = run(small_cfg(epochs=2), ds, tmp_path, "default")
    assert featurize_options_of(load_checkpoint(default.checkpoint_path)) == FeaturizeOptions(True, layout="blocked")
    layoutless = {**ck_o, "featurize": {k: v for k, v in ck_o["featurize"].items() if k != "layout"}}
    assert featurize_options_of(layoutless) == FeaturizeOptions(False, layout="greedy")  # made before the blocked layout
    older = {k: v for k, v in ck_o.items() if k != "featurize"}  # gmp_chunks only: that time's default
    assert featurize_options_of(older) == FeaturizeOptions(layout="greedy")
    oldest = {k: v for k, v in older.items() if k != "gmp_chunks"}  # before one-structure-per-chunk
    assert featurize_options_of(oldest) == FeaturizeOptions(share_chunks=True, layout="greedy")
    # a checkpoint without the new records still continues
    torch.save(older, tmp_path / "older.pt")
    cont = run(small_cfg(epochs=3), ds, tmp_path, "cont", Fidelity(epochs=3), init_checkpoint=tmp_path / "older.pt")
    assert cont.warm_start["used"] and cont.epochs_run == 3


def test_public_api_and_one_scoring_path(demo_ds, demo_file, cache, tmp_path):
    """mfhpo exports train/evaluate/load_potential/score/MfhpoCalculator lazily; evaluate, score and the
    training's own metrics agree."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "import sys, mfhpo; print('torch' in sys.modules)"],
                       capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"  # import mfhpo stays light
    import mfhpo
    import mfhpo.evaluate  # noqa: F401 - the submodules of the same names do not shadow the functions
    import mfhpo.train  # noqa: F401
    from mfhpo.data import load_dataset
    from mfhpo.train import make_split

    assert callable(mfhpo.train) and mfhpo.train.__name__ == "train"
    assert callable(mfhpo.evaluate) and mfhpo.evaluate.__name__ == "evaluate"
    cfg = small_cfg(epochs=2, force_coefficient=0.1)
    res = mfhpo.train(cfg, demo_ds, Fidelity(epochs=2), tmp_path / "api", progress=False, cache=cache)
    pot = mfhpo.load_potential(res.checkpoint_path)
    val = mfhpo.score(pot, demo_ds, indices=make_split(cfg, demo_ds).val)
    assert isinstance(val, mfhpo.Metrics)
    for k, v in res.metrics["val"].items():
        assert getattr(val, k) == pytest.approx(v, rel=1e-12, abs=1e-14), k
    m = mfhpo.evaluate(res.checkpoint_path, demo_file, device="cpu")
    assert m == mfhpo.score(pot, load_dataset(demo_file))
    assert m.n_structures == 60 and m.force_mae > 0 and m.baseline_force_mae > 0
    assert mfhpo.Metrics.from_dict(m.to_dict()) == m
    atoms = demo_ds.images[0].copy()
    atoms.calc = mfhpo.MfhpoCalculator(pot)
    assert math.isfinite(atoms.get_potential_energy())
