"""Hardening: bad inputs rejected before any worker, authenticated Dask, changed data refused, the
run-directory lock under simultaneous starts, a full disk, Ctrl-C, and bundles without machine paths.

The bad-input table runs ``mfhpo.cli.main`` in-process with ``start_cluster`` replaced by a function
that fails the test: every case must end with exit 2 and one ``error:`` line before a cluster could
start. The other tests use a real Dask LocalCluster (and real Slurm where marked)."""

from __future__ import annotations

import copy
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import pandas as pd
import pytest
import yaml
from ase.calculators.singlepoint import SinglePointCalculator

from mfhpo.errors import MfhpoError
from mfhpo.study.rundir import RunDir
from mfhpo.study.runner import run_command

REPO = Path(__file__).resolve().parents[1]

TOY = {
    "name": "hard",
    "seed": 0,
    "data": {"train": "data.traj", "val_fraction": 0.25},
    "metric": {"energy": "energy_mae_per_atom", "forces": "force_mae", "force_weight": 1.0},
    "space": {
        "num_layers": {"low": 1, "high": 2},
        "nodes": {"low": 4, "high": 16},
        "lr": {"low": 1e-4, "high": 1e-2, "log": True},
        "activation": {"choices": ["tanh", "silu"]},
    },
    "fidelity": {"min_budget": 1, "max_budget": 9, "eta": 3, "epochs": {"min": 1, "max": 9}},
    "budget": {"trials": 3},
    "optimizer_options": {"initial_design": 2},
    "objective": "toy",
    "toy": {"sleep_fixed_s": 0.0},
    "cluster": {"kind": "local", "workers": 1, "dashboard_port": 0},
}


def _labelled(images):
    out = []
    for a in images:
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=a.get_potential_energy(), forces=a.get_forces(apply_constraint=False))
        out.append(b)
    return out


@pytest.fixture(scope="module")
def frames(demo_images):
    return _labelled(demo_images[:16])


def write_study(d: Path, fname: str = "study.yaml", **over) -> Path:
    s = copy.deepcopy(TOY)
    for k, v in over.items():
        if v is None:
            s.pop(k, None)
        elif isinstance(v, dict) and isinstance(s.get(k), dict) and k not in ("space", "cluster"):
            s[k].update(v)
        else:
            s[k] = v
    p = d / fname
    p.write_text(yaml.safe_dump(s, sort_keys=False))
    return p


# --------------------------------------------------------------------------------------------
# bad data files
# --------------------------------------------------------------------------------------------


def _edit(frames, k, fn):
    imgs = _labelled(frames)
    fn(imgs[k])
    return imgs


def _set_pos(i, j, v):
    def f(a):
        p = a.positions.copy()
        p[i, j] = v
        a.positions = p
    return f


def _no_forces(a):
    a.calc = SinglePointCalculator(a, energy=a.calc.results["energy"])


def _no_energy(a):
    a.calc = SinglePointCalculator(a, forces=a.calc.results["forces"])


def _cell(cell, pbc=True):
    def f(a):
        a.set_cell(cell)
        a.pbc = pbc
    return f


def _dummy(a):
    n = a.numbers.copy()
    n[2] = 0
    a.numbers = n


def _unlabelled(a):
    a.calc = None


BAD_DATA = {
    # name: (edit of frame k, k, expected text)
    "dummy_element_X": (_dummy, 3, "frame 3: atom 2: unknown element 'X'"),
    "atom_at_1e12": (_set_pos(0, 2, 1e12), 5, "frame 5: atom 0: coordinate 1e+12 Å is outside |r| <= 10000 Å"),
    "atom_at_1e5": (_set_pos(1, 0, -1e5), 0, "frame 0: atom 1: coordinate 100000 Å is outside"),
    "nan_position": (_set_pos(0, 0, float("nan")), 2, "frame 2: positions contain NaN or inf"),
    "inf_position": (_set_pos(0, 1, float("inf")), 2, "frame 2: positions contain NaN or inf"),
    "one_frame_without_forces": (_no_forces, 7, "frame(s) 7 (1 of 16) have no forces"),
    "frame_without_energy": (_no_energy, 4, "frame 4: missing energy"),
    "frame_without_labels": (_unlabelled, 6, "frame 6: has no energy/forces"),
    "cell_1e6": (_cell([[1e6, 0, 0], [0, 10, 0], [0, 0, 10]]), 1, "frame 1: cell vector length 1e+06 Å is above"),
    "zero_volume_cell": (_cell([[5, 0, 0], [0, 5, 0], [0, 0, 0]]), 1, "frame 1: periodic cell has zero volume"),
    "thin_cell": (_cell([[0.05, 0, 0], [0, 10, 0], [0, 0, 10]]), 1, "frame 1: periodic cell is 0.05 Å thin"),
}


def _bad_data_case(name):
    def build(d: Path, frames):
        fn, k, msg = BAD_DATA[name]
        ase.io.write(str(d / "data.traj"), _edit(frames, k, fn))
        return ["run", str(write_study(d))], ["data.traj", msg]
    return build


def _study_case(expect, **over):
    def build(d: Path, frames):
        ase.io.write(str(d / "data.traj"), frames)
        return ["run", str(write_study(d, **over))], ["study.yaml", *expect]
    return build


def _study_case_any(expect, **over):  # errors about a data file name that file, not the study
    def build(d: Path, frames):
        argv, _ = _study_case([], **over)(d, frames)
        return argv, expect
    return build


def _space(**kw):
    s = copy.deepcopy(TOY["space"])
    for k, v in kw.items():
        if v is None:
            s.pop(k)
        else:
            s[k] = v
    return s


def _file_case(content: str, suffix: str, expect: str):
    def build(d: Path, frames):
        (d / f"bad{suffix}").write_text(content)
        return ["run", str(write_study(d, data={"train": f"bad{suffix}"}))], [f"bad{suffix}", expect]
    return build


def _densities_case(where: str):
    def build(d: Path, frames):
        ase.io.write(str(d / "data.traj"), frames)
        (d / "dens").mkdir()
        (d / "dens" / "Cu.g").write_text("1.0 2.0\n")
        if where == "fixed":
            p = write_study(d, fixed={"descriptor": {"densities": "dens"}})
            return ["run", str(p)], ["study.yaml", "space/fixed defaults", "no density file for element"]
        p = write_study(d, space=_space(densities={"choices": ["default", "dens"]}))
        return ["run", str(p)], ["study.yaml", "space.densities: value 'dens'", "no density file for element"]
    return build


def _test_file_case(d: Path, frames):
    ase.io.write(str(d / "data.traj"), frames)
    ase.io.write(str(d / "test.traj"), _edit(frames, 1, _dummy))
    p = write_study(d, data={"train": "data.traj", "test": "test.traj"})
    return ["run", str(p)], ["test.traj", "frame 1: atom 2: unknown element 'X'"]


def _command_case(kind: str):
    def build(d: Path, frames):
        ase.io.write(str(d / "far.traj"), _edit(frames, 2, _set_pos(0, 2, 1e12)))
        (d / "notarun").mkdir()
        (d / "notarun" / "notes.txt").write_text("x")
        (d / "cfg.yaml").write_text("{}\n")
        if kind == "train":
            return ["train", str(d / "cfg.yaml"), "--data", str(d / "far.traj"), "--out", str(d / "o")], \
                ["far.traj", "frame 2: atom 0: coordinate"]
        if kind == "evaluate":
            return ["evaluate", str(d / "missing.pt"), str(d / "far.traj")], ["far.traj", "frame 2: atom 0"]
        if kind in ("report", "status", "incumbent"):
            extra = ["--out", str(d / "rep")] if kind == "report" else []
            return [kind, str(d / "notarun"), *extra], ["notarun", "not a study run directory"]
        raise AssertionError(kind)
    return build


def _featurize_far_atom(d: Path, frames):
    from test_gmp import _molecule, _write_setting

    (d / "C.g").write_text("4.0 1.0\n")
    setting = _write_setting(d / "s.json", atom_gaussians={"C": "C.g", "H": "C.g", "O": "C.g"})
    far = _molecule()
    far.positions[1, 2] = 1e12
    ase.io.write(str(d / "far.traj"), [_molecule(), far])
    return (["featurize", str(d / "far.traj"), "--setting", str(setting), "--out", str(d / "o.npz")],
            ["far.traj", "frame 1: atom 1: coordinate 1e+12 Å is outside"])


def _cli_option_case(args, expect):
    def build(d: Path, frames):
        ase.io.write(str(d / "data.traj"), frames)
        return ["run", str(write_study(d)), *args], expect
    return build


def _yaml_case(text, expect):
    def build(d: Path, frames):
        (d / "study.yaml").write_text(text)
        return ["run", str(d / "study.yaml")], ["study.yaml", *expect]
    return build


CASES = {
    **{f"data_{n}": _bad_data_case(n) for n in BAD_DATA},
    "data_group_key_missing": _study_case_any(["data.traj: frame 0: info has no group key 'nokey'"],
                                          data={"train": "data.traj", "group_key": "nokey"}),
    "data_max_force_leaves_nothing": _study_case_any(["data.traj: no frame left after filtering max |F|"],
                                                 data={"train": "data.traj", "max_force": 1e-9}),
    "data_train_missing": _study_case(["data.train", "file not found"], data={"train": "nope.traj"}),
    "data_test_missing": _study_case(["data.test", "file not found"], data={"train": "data.traj", "test": "no.xyz"}),
    "data_test_dummy_element": _test_file_case,
    "data_not_structures": _file_case("hello world\n", ".extxyz", "cannot read structures"),
    "data_empty_file": _file_case("", ".extxyz", "bad.extxyz"),
    "densities_fixed_lacks_element": _densities_case("fixed"),
    "densities_choice_lacks_element": _densities_case("space"),
    "space_activation_bad_choice": _study_case(["space.activation: value 'sigmoid_xyz'", "model.activation"],
                                               space=_space(activation={"choices": ["tanh", "sigmoid_xyz"]})),
    "space_nodes_low_0": _study_case(["space.nodes: value 0", "hidden_layers"],
                                     space=_space(nodes={"low": 0, "high": 8})),
    "space_unknown_parameter": _study_case(["space.foo: unknown parameter"], space=_space(foo={"low": 1, "high": 2})),
    "space_high_below_low": _study_case(["space.lr.high: must be greater than low"],
                                        space=_space(lr={"low": 0.1, "high": 0.01})),
    "space_log_low_zero": _study_case(["space.lr.low: must be > 0 on a log scale"],
                                      space=_space(lr={"low": 0, "high": 0.1, "log": True})),
    "space_cutoff_too_large": _study_case(["space.cutoff: value 30", "descriptor.cutoff"],
                                          space=_space(cutoff={"low": 3.0, "high": 30.0})),
    "space_dropout_one": _study_case(["space.dropout: value 1.0", "model.dropout"],
                                     space=_space(dropout={"low": 0.0, "high": 1.0})),
    "space_batch_size_text": _study_case(["space.batch_size: value 'abc'"],
                                         space=_space(batch_size={"choices": [8, "abc"]})),
    "space_scheduler_bad_choice": _study_case(["space.scheduler: value 'bogus'", "training.scheduler"],
                                              space=_space(scheduler={"choices": ["none", "bogus"]})),
    "space_step_gamma_above_one": _study_case(["space.gamma", "training.gamma"],
                                              space=_space(scheduler={"choices": ["none", "step"]},
                                                           gamma={"low": 0.5, "high": 2.0})),
    "space_groups_bad_subset": _study_case(["space.groups_2"],
                                           space=_space(max_order={"low": 1, "high": 2},
                                                        groups_2={"choices": [[1], [7]]})),
    "space_channels_unknown": _study_case(["space.channels", "bogus"],
                                          space=_space(channels=["valence", "bogus"])),
    "space_max_order_above_5": _study_case(["space.max_order: must lie in [0, 5]"],
                                           space=_space(max_order={"low": 0, "high": 7})),
    "space_sigma_min_negative": _study_case(["space.sigma_min", "sigmas must be"],
                                            space=_space(sigma_min={"low": -1.0, "high": 0.5})),
    "space_lr_above_one": _study_case(["space.lr", "training.lr: Input should be less than or equal to 1"],
                                      space=_space(lr={"low": 0.1, "high": 5.0})),
    "fixed_bad_loss": _study_case(["training.loss"], fixed={"training": {"loss": "bogus"}}),
    "study_unknown_key": _study_case(["bogus: unknown key"], bogus=1),
    "study_bad_name": _study_case(["name"], name="bad name"),
    "fidelity_eta_one": _study_case(["fidelity.eta"], fidelity={**TOY["fidelity"], "eta": 1}),
    "fidelity_max_below_min": _study_case(["max_budget must be >= min_budget"],
                                          fidelity={**TOY["fidelity"], "min_budget": 9, "max_budget": 1}),
    "budget_empty": _study_case(["budget", "give at least one of trials"], budget={"trials": None}),
    "val_fraction_above_one": _study_case(["data.val_fraction"], data={"train": "data.traj", "val_fraction": 1.5}),
    "metric_unknown_energy": _study_case(["metric.energy"], metric={"energy": "bogus"}),
    "time_limit_not_a_duration": _study_case(["trial_time_limit"], trial_time_limit="soon"),
    "cheap_model_not_model_param": _study_case(["two_stage.cheap_model.cutoff: not a model parameter"],
                                               mode="two-stage", two_stage={"cheap_model": {"cutoff": 4.0}},
                                               space=_space(cutoff={"low": 3.0, "high": 4.0})),
    "cluster_unknown_kind": _study_case(["cluster.kind: unknown kind 'bogus'"], cluster={"kind": "bogus"}),
    "cluster_bad_walltime": _study_case(["cluster.walltime"], cluster={"kind": "slurm", "walltime": "soon"}),
    "cluster_workers_on_slurm": _study_case(["cluster.workers: only applies to kind local"],
                                            cluster={"kind": "slurm", "workers": 2}),
    "cluster_security_unknown": _study_case(["cluster.security"], cluster={"kind": "local", "security": "maybe"}),
    "cluster_security_files_missing": _study_case(
        ["cluster.security.ca_file", "nope.pem: file not found"],
        cluster={"kind": "local", "workers": 1, "security": {"ca_file": "nope.pem", "cert": "c.pem", "key": "k.pem"}}),
    "yaml_syntax": _yaml_case("name: x\nspace: [unclosed\n", ["invalid YAML"]),
    "yaml_not_mapping": _yaml_case("- a\n- b\n", ["top level must be a mapping"]),
    "option_optimizer": _cli_option_case(["--optimizer", "bogus"], ["--optimizer", "bogus"]),
    "option_trials_zero": _cli_option_case(["--trials", "0"], ["--trials: must be >= 1"]),
    "option_workers_zero": _cli_option_case(["--workers", "0"], ["--workers: must be >= 1"]),
    "study_file_missing": lambda d, f: (["run", str(d / "none.yaml")], ["none.yaml", "file not found"]),
    "train_far_atom": _command_case("train"),
    "featurize_far_atom": _featurize_far_atom,
    "evaluate_far_atom": _command_case("evaluate"),
    "report_not_a_run": _command_case("report"),
    "status_not_a_run": _command_case("status"),
    "incumbent_not_a_run": _command_case("incumbent"),
}


def test_bad_input_table_has_at_least_40_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_ends_with_exit_2_and_one_line_before_any_worker(case, tmp_path, frames, capsys, monkeypatch):
    import mfhpo.study.clusters as clusters
    from mfhpo.cli import main

    def no_cluster(*a, **k):
        raise AssertionError("a Dask cluster was started for a bad input")

    monkeypatch.setattr(clusters, "start_cluster", no_cluster)
    monkeypatch.chdir(tmp_path)
    argv, expect = CASES[case](tmp_path, frames)
    with pytest.raises(SystemExit) as ei:
        main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert ei.value.code == 2, (ei.value.code, out[-2000:], err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for e in expect:
        assert e in lines[0], (e, lines[0])
    assert "[mfhpo] scheduler" not in out and "Traceback" not in err
    for rd in tmp_path.glob("runs/*"):
        assert not (rd / "dask-worker-space").exists()


# --------------------------------------------------------------------------------------------
# mfhpo run --check
# --------------------------------------------------------------------------------------------


def test_check_shows_ladder_cluster_and_job_script_and_runs_nothing(tmp_path, frames, capsys, monkeypatch):
    import mfhpo.study.clusters as clusters
    from mfhpo.cli import main

    monkeypatch.setattr(clusters, "start_cluster", lambda *a, **k: (_ for _ in ()).throw(AssertionError("started")))
    monkeypatch.chdir(tmp_path)
    ase.io.write(str(tmp_path / "data.traj"), frames)
    p = write_study(tmp_path, fidelity={**TOY["fidelity"], "max_budget": 10, "epochs": {"min": 1, "max": 10}},
                    cluster={"kind": "slurm", "partition": "debug", "gpus_per_job": 0, "cpus_per_job": 1,
                             "memory": "1GB"})
    with pytest.raises(SystemExit) as ei:
        main(["run", str(p), "--check"])
    out, err = capsys.readouterr()
    assert ei.value.code == 0, err
    elements = ", ".join(sorted({s for a in frames for s in a.get_chemical_symbols()}))
    assert f"elements {elements}" in out and len(elements.split(", ")) >= 4
    assert "corner configurations materialised" in out
    # budgets 1.111, 3.333, 10 -> whole epochs, the rounding stated
    assert "budget 1.111: 1 epochs" in out and "(epochs 3.333 rounded to 3)" in out and "budget 10: 10 epochs" in out
    assert "#SBATCH -p debug" in out and "--tls-key" in out and "security TLS" in out
    assert "check passed: no trial was run" in out
    assert not (tmp_path / "runs").exists()  # nothing written
    assert "brackets" not in out  # ASHA alone
    p3 = write_study(tmp_path, "ahb.yaml", fidelity={**TOY["fidelity"], "max_budget": 10, "epochs": {"min": 1, "max": 10}},
                     optimizer_options={"brackets": "all"})
    with pytest.raises(SystemExit) as ei:
        main(["run", str(p3), "--check"])
    assert ei.value.code == 0
    assert "brackets: 3 (asynchronous Hyperband): new configurations start at budget 1.111, 3.333, 10," in \
        capsys.readouterr().out
    # a bad corner fails --check the same way as run
    p2 = write_study(tmp_path, "bad.yaml", space=_space(activation={"choices": ["tanh", "sigmoid_xyz"]}))
    with pytest.raises(SystemExit) as ei:
        main(["run", str(p2), "--check"])
    assert ei.value.code == 2 and "space.activation: value 'sigmoid_xyz'" in capsys.readouterr().err


def test_corners_cover_every_choice_and_range_end():
    from mfhpo.study.check import corner_flats
    from mfhpo.study.config import parse_study
    from mfhpo.study.space import build_space_spec

    doc = copy.deepcopy(TOY)
    doc["data"] = {"train": "demo"}
    doc["space"].update({"scheduler": {"choices": ["none", "step"]}, "gamma": {"low": 0.1, "high": 0.9},
                         "force_coefficient": {"low": 0.01, "high": 1.0, "log": True, "or_zero": True}})
    st = parse_study(doc)
    corners = corner_flats(build_space_spec(st))
    seen = {(c.key, c.value) for c in corners}
    assert {("activation", "tanh"), ("activation", "silu"), ("nodes", 4), ("nodes", 16), ("num_layers", 1),
            ("num_layers", 2), ("gamma", 0.1), ("gamma", 0.9), ("force_coefficient", "off (0)")} <= seen
    g = next(c for c in corners if c.key == "gamma" and c.value == 0.9)
    assert g.flat["scheduler"] == "step"  # the parent that makes gamma active
    n = next(c for c in corners if c.key == "nodes" and c.value == 16)
    assert n.flat["num_layers"] == 2 and n.flat["nodes_2"] == 16


# --------------------------------------------------------------------------------------------
# security
# --------------------------------------------------------------------------------------------


def _connect_fails(addr: str, **kw) -> str:
    from distributed import Client

    try:
        c = Client(addr, timeout=4, **kw)
    except Exception as exc:  # noqa: BLE001 - any refusal is fine; connecting is the failure
        return type(exc).__name__
    c.close()
    return ""


def _getpid():
    return os.getpid()


def test_unauthenticated_client_cannot_reach_a_running_study(tmp_path, frames):
    from distributed.security import Security

    ase.io.write(str(tmp_path / "data.traj"), frames)
    p = write_study(tmp_path, budget={"trials": 4}, toy={"sleep_fixed_s": 2.5})
    proc = subprocess.Popen([sys.executable, "-m", "mfhpo.cli", "run", str(p), "--rundir", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    addr = None
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("[mfhpo] scheduler "):
            addr = line.split()[2].rstrip(";")
            break
    try:
        assert addr and addr.startswith("tls://127.0.0.1:"), addr
        host_port = addr.split("://", 1)[1]
        assert _connect_fails(f"tcp://{host_port}"), "a plain-TCP client connected"
        assert _connect_fails(addr, security=Security.temporary()), "a client with foreign credentials connected"
        assert proc.poll() is None, "the study ended before the attempts: they proved nothing"
    finally:
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    assert len(pd.read_csv(tmp_path / "run" / "trials.csv")) == 4


def test_local_cluster_security_default_and_off(tmp_path):
    from mfhpo.study.clusters import ClusterConfig, start_cluster

    h = start_cluster(ClusterConfig(kind="local", workers=1, dashboard_port=0), tmp_path / "a")
    try:
        addr = h.client.scheduler.address
        assert addr.startswith("tls://")
        assert _connect_fails(addr.replace("tls://", "tcp://"))
        pids = h.client.run(_getpid)  # the study's own client is authenticated
        assert len(pids) == 1
    finally:
        h.close()
    # security: off is plain TCP: here an outside client does connect (what the default prevents)
    h = start_cluster(ClusterConfig(kind="local", workers=1, dashboard_port=0, security="off"), tmp_path / "b")
    try:
        addr = h.client.scheduler.address
        assert addr.startswith("tcp://") and _connect_fails(addr) == ""
    finally:
        h.close()


# --------------------------------------------------------------------------------------------
# changed data, lock, Ctrl-C, disk full
# --------------------------------------------------------------------------------------------


def test_resume_with_changed_data_is_refused(tmp_path, frames):
    ase.io.write(str(tmp_path / "data.traj"), frames)
    p = write_study(tmp_path, budget={"trials": 2})
    rundir = tmp_path / "run"
    run_command(p, rundir=rundir, progress=False)
    state = json.loads((rundir / "state.json").read_text())
    original = state["provenance"]["data"]["train"]["file_sha256"]
    assert len(original) == 64
    saved = (tmp_path / "data.traj").read_bytes()
    shifted = _labelled(frames[:12])
    for a in shifted:
        a.calc.results["energy"] += 5.0
    ase.io.write(str(tmp_path / "data.traj"), shifted)
    with pytest.raises(MfhpoError, match=r"data\.traj: data\.train changed since .*run was started.*"
                                         r"start a new study with --rundir"):
        run_command(p, rundir=rundir, trials=3, progress=False)
    assert len(pd.read_csv(rundir / "trials.csv")) == 2  # nothing mixed in
    (tmp_path / "data.traj").write_bytes(saved)  # the original file: the study resumes
    run_command(p, rundir=rundir, trials=3, progress=False)
    assert len(pd.read_csv(rundir / "trials.csv")) == 3


def _race(path, barrier, q):
    from mfhpo.study.lock import RunLock

    barrier.wait()
    try:
        with RunLock(path):
            q.put("got")
            time.sleep(1.0)
    except MfhpoError as exc:
        q.put(str(exc))


def test_lock_twenty_processes_at_the_same_instant_exactly_one_wins(tmp_path):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(20)
    q = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(tmp_path / "run.lock", barrier, q)) for _ in range(20)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(30)
    res = [q.get(timeout=5) for _ in range(20)]
    assert res.count("got") == 1, res
    assert all("another mfhpo run (pid " in r for r in res if r != "got")


def test_lock_left_by_a_killed_run_is_not_stale(tmp_path):
    from mfhpo.study.lock import RunLock

    code = f"from mfhpo.study.lock import RunLock; import os, time\nl = RunLock({str(tmp_path / 'run.lock')!r}).__enter__()\n" \
           "print('locked', flush=True); time.sleep(60)"
    pr = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert pr.stdout.readline().strip() == "locked"
    with pytest.raises(MfhpoError, match=f"pid {pr.pid}"):
        RunLock(tmp_path / "run.lock").__enter__()
    pr.send_signal(signal.SIGKILL)
    pr.wait()
    with RunLock(tmp_path / "run.lock"):  # the kernel released the dead owner's lock
        pass


@pytest.mark.slow
def test_twenty_simultaneous_mfhpo_runs_exactly_one_runs(tmp_path, frames):
    ase.io.write(str(tmp_path / "data.traj"), frames)
    p = write_study(tmp_path, budget={"trials": 3}, toy={"sleep_fixed_s": 3.0})
    cmd = [sys.executable, "-m", "mfhpo.cli", "run", str(p), "--rundir", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
             for _ in range(20)]
    res = [(pr.wait(240), *pr.communicate()) for pr in procs]
    ran = [r for r in res if r[0] == 0 and "[mfhpo] done: 3 trials" in r[1]]
    refused = [r for r in res if r[0] == 2 and "another mfhpo run (pid" in r[2] and len(r[2].strip().splitlines()) == 1]
    assert len(ran) == 1, [r[2][-300:] for r in res]
    assert len(refused) == 19, [r[2][-300:] for r in res if r not in refused]
    df = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert sorted(df.trial_id) == [1, 2, 3]


def test_ctrl_c_prints_one_line_with_the_resume_command_and_resumes(tmp_path, frames):
    ase.io.write(str(tmp_path / "data.traj"), frames)
    p = write_study(tmp_path, budget={"trials": 6}, toy={"sleep_fixed_s": 1.0},
                    cluster={"kind": "local", "workers": 2, "dashboard_port": 0})
    cmd = [sys.executable, "-m", "mfhpo.cli", "run", str(p), "--rundir", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        line = proc.stdout.readline()
        if not line or line.startswith("[mfhpo] trial 1 "):
            break
    os.killpg(proc.pid, signal.SIGINT)  # as the terminal does: the whole process group
    out, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 130, err[-3000:]
    assert len(lines) == 1 and "interrupted; finished trials are saved, resume with: mfhpo run" in lines[0], err
    assert f"--rundir {tmp_path / 'run'}" in lines[0]
    recs = RunDir(tmp_path / "run").trial_records()
    assert recs and all(r.status in ("SUCCESS", "RUNNING") for r in recs)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "run" / "trials.csv")) == 6


def _mount_tmpfs(d: Path, size: str) -> str | None:
    """Mount a small tmpfs at ``d``; the reason when that is not possible here."""
    if os.geteuid() != 0:
        return "not root: cannot mount a tmpfs"
    if not shutil.which("mount"):
        return "no mount command"
    d.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        return f"mount -t tmpfs failed: {(r.stderr or r.stdout).strip()[:200]}"
    return None


def test_disk_full_is_one_line_state_stays_valid_and_resumes(tmp_path, frames):
    disk = tmp_path / "disk"
    why = _mount_tmpfs(disk, "2m")
    if why:
        pytest.skip(why)
    try:
        ase.io.write(str(tmp_path / "data.traj"), frames)
        p = write_study(tmp_path, budget={"trials": 8}, toy={"sleep_fixed_s": 0.2})
        rundir = disk / "run"
        cmd = [sys.executable, "-m", "mfhpo.cli", "run", str(p), "--rundir", str(rundir)]
        first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=180)
        assert first.returncode == 0, first.stderr[-2000:]
        # fill the disk, then extend the study: the next write fails with ENOSPC
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as fh:  # unbuffered: close() has nothing left to flush onto the full disk
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        full = subprocess.run(cmd + ["--trials", "12"], capture_output=True, text=True, cwd=tmp_path, timeout=180)
        lines = full.stderr.strip().splitlines()
        assert full.returncode == 1, full.stderr[-3000:]
        assert len(lines) == 1 and "no space left on the device" in lines[0] and "resume with: mfhpo run" in lines[0], \
            full.stderr[-3000:]
        # state valid: every JSON parses, the table reads
        json.loads((rundir / "state.json").read_text())
        for f in (rundir / "trials").glob("*/trial.json"):
            json.loads(f.read_text())
        assert len(pd.read_csv(rundir / "trials.csv")) >= 8
        filler.unlink()
        again = subprocess.run(cmd + ["--trials", "12"], capture_output=True, text=True, cwd=tmp_path, timeout=180)
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(pd.read_csv(rundir / "trials.csv")) == 12
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# --------------------------------------------------------------------------------------------
# bundles
# --------------------------------------------------------------------------------------------


def test_retrain_never_creates_paths_outside_its_out_dir(tmp_path):
    from mfhpo.study.incumbent import bundle_data_file

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    out = tmp_path / "out"
    evil = {"file": "../../escaped.extxyz", "hash": "x", "generated_demo": {"n_structures": 10, "seed": 0}}
    with pytest.raises(MfhpoError, match="data.train.file: '../../escaped.extxyz' is not a plain file name"):
        bundle_data_file(bundle, out, evil)
    old_style = {"path": str(tmp_path / "elsewhere" / "deep" / "demo.extxyz"), "hash": "x",
                 "generated_demo": {"n_structures": 10, "seed": 0}}
    got = bundle_data_file(bundle, out, old_style)
    assert got == out / "demo.extxyz" and got.exists()
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "escaped.extxyz").exists()
    with pytest.raises(MfhpoError, match="n_structures"):
        bundle_data_file(bundle, tmp_path / "out2", {"file": "d.extxyz", "generated_demo": {"n_structures": 10**9,
                                                                                           "seed": 0}})
    with pytest.raises(MfhpoError, match="not next to the bundle"):
        bundle_data_file(bundle, tmp_path / "out3", {"file": "real.extxyz", "hash": "h"})


def test_portable_records_drop_machine_paths_and_hosts(tmp_path):
    from mfhpo.study.portable import portable

    rec = {"worker": "node17.cluster.edu:cpu0", "checkpoint": str(tmp_path / "run" / "trials" / "00003" / "c.pt"),
           "warm_start": {"from": "/home/alice/runs/x/trials/00001/checkpoint.pt"}, "host": "node17",
           "data": {"path": "/home/alice/data/train.extxyz", "hash": "abc"}, "n": 3}
    p = portable(rec, tmp_path / "run")
    assert p["worker"] == "cpu0" and p["checkpoint"] == "trials/00003/c.pt" and "host" not in p
    assert p["warm_start"]["from"] == "checkpoint.pt" and p["data"] == {"file": "train.extxyz", "hash": "abc"}
    assert "alice" not in json.dumps(p) and str(tmp_path) not in json.dumps(p)
