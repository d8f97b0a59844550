"""Typed trial records: trial.json round-trips (old files included), the trials.csv row, the one
incumbent rule that ``mfhpo status``, ``mfhpo incumbent`` and ``mfhpo report`` share (ties
included), and the stage logic's ``drop_inactive`` on the space's own conditions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mfhpo.study.config import MetricSection
from mfhpo.study.rundir import RunDir
from mfhpo.study.trial import Candidate, TrialRecord, TrialResult, TrialSpec, TrialStatus, select_incumbent

# a trial.json as the study engine writes it (keys in their order; the toy objective's result)
OLD_JSON = {
    "trial_id": 7, "config_id": 3, "stage": "joint", "optimizer": "smac-mf", "budget": 3.0, "smac_budget": 3.0,
    "smac_seed": 209652396, "seed": 0, "epochs": 12, "subset_fraction": 0.75, "status": "SUCCESS", "cost": 0.25,
    "searched": {"lr": 0.01, "num_layers": 1, "nodes_1": 16}, "params": {"lr": 0.01, "num_layers": 1, "nodes_1": 16},
    "config": {"seed": 0}, "init_checkpoint": None, "warm_start_from_trial": 2, "submitted_at": "2026-12-03T10:00:00+00:00",
    "metrics": {"val": {"energy_mae_per_atom": 0.2, "force_mae_free": 1.0, "n_structures": 4}},
    "timings": {"featurize_s": 0.5, "train_s": 2.0, "total_s": 3.0}, "device": "cpu", "worker": "host:w0",
    "started_at": "2026-12-03T10:00:01+00:00", "finished_at": "2026-12-03T10:00:04+00:00", "best_epoch": 11,
    "started_unix": 1.0, "finished_unix": 4.0, "checkpoint": "/x/checkpoint.pt", "epochs_run": 12,
    "warm_start": {"used": True, "from_epoch": 4, "from_trial": 2}, "epochs_trained": 8, "epochs_saved": 4,
    "epoch_equivalents": 6.0, "time_saved_s": 1.0, "a_future_key": {"kept": True},
}


def test_trial_json_round_trips_with_its_keys_in_order():
    rec = TrialRecord.from_json(OLD_JSON)
    assert rec.status is TrialStatus.SUCCESS and rec.warm_started and rec.val["force_mae_free"] == 1.0
    assert rec.to_json() == OLD_JSON and list(rec.to_json()) == list(OLD_JSON)
    running = TrialRecord.from_json({k: OLD_JSON[k] for k in list(OLD_JSON)[:18]} | {"status": "RUNNING"})
    assert "metrics" not in running.to_json() and running.to_json()["cost"] == 0.25  # only what is known


def test_table_row_has_the_trial_table_columns():
    row = TrialRecord.from_json(OLD_JSON).table_row()
    assert row["status"] == "SUCCESS" and row["warm_started"] is True and row["warm_start_from"] == 2
    assert row["wall_time_s"] == 3.0 and row["train_time_s"] == 2.0 and row["val_n_structures"] == 4
    assert row["cfg.nodes_1"] == 16 and row["epoch_equivalents"] == 6.0


def test_result_bookkeeping_and_spec_round_trip():
    spec = TrialSpec(trial_id=1, trial_dir="/t/1", config={}, budget={"epochs": 4, "subset_fraction": 0.5},
                     smac_budget=1.0, max_budget=9.0, data={"train": "x"}, metric=MetricSection(force_weight=0.5))
    assert TrialSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    rec = TrialRecord(trial_id=1, subset_fraction=0.5, warm_start_from_trial=None)
    res = TrialResult(status=TrialStatus.SUCCESS, cost=0.1, epochs_run=9, timings={"train_s": 3.0},
                      warm_start={"used": True, "from_epoch": 3})
    rec.record_result(TrialResult.from_json(res.to_json()))
    assert (rec.epochs_trained, rec.epochs_saved, rec.epoch_equivalents, rec.time_saved_s) == (6, 3, 3.0, 1.5)
    assert TrialStatus.of_result("SOMETHING") is TrialStatus.CRASHED


def test_select_incumbent_top_budget_then_cost_then_trial_id():
    c = [Candidate(1, "SUCCESS", 1.0, 0.01), Candidate(3, "SUCCESS", 3.0, 0.2), Candidate(2, "SUCCESS", 3.0, 0.2),
         Candidate(4, "CRASHED", 9.0, None), Candidate(5, "SUCCESS", 3.0, float("nan"))]
    assert select_incumbent(c).trial_id == 2
    assert select_incumbent([Candidate(1, "CRASHED", 1.0, None)]) is None


def _rec(tid, budget, cost, finished_at, status="SUCCESS"):
    val = {"energy_mae_per_atom": cost, "baseline_energy_mae_per_atom": 1.0, "force_mae": 0.1,
           "baseline_force_mae": 1.0, "force_mae_free": 0.1, "baseline_force_mae_free": 1.0, "n_structures": 4}
    return TrialRecord.from_json({
        "trial_id": tid, "config_id": tid, "stage": "joint", "optimizer": "smac-mf", "budget": budget,
        "smac_budget": budget, "smac_seed": 1, "seed": 0, "epochs": int(4 * budget), "subset_fraction": 1.0,
        "status": status, "cost": cost if status == "SUCCESS" else None, "searched": {"lr": 0.001 * tid},
        "params": {"lr": 0.001 * tid}, "config": {"seed": 0, "descriptor": {"cutoff_function": "cosine"}},
        "metrics": {"val": val} if status == "SUCCESS" else None, "timings": {"total_s": 1.0},
        "device": "cpu", "finished_at": finished_at, "epochs_run": int(4 * budget), "epoch_equivalents": 4 * budget,
        "warm_start": {"used": False}})


def test_live_view_keeps_the_incumbent_of_every_record_as_they_arrive():
    """The progress view updates its incumbent from (incumbent, new record) per finished trial; that
    is the rule over all records at every step: budgets, costs, ties, crashes and NaN in any order."""
    import io
    import random

    from mfhpo.study.progress import ProgressView

    rng = random.Random(1)
    view = ProgressView("t", MetricSection(), lambda: "", enabled=True, stream=io.StringIO())
    seen = []
    for tid in range(1, 200):
        status = "CRASHED" if rng.random() < 0.1 else "SUCCESS"
        cost = rng.choice([0.5, 0.25, float("nan"), round(rng.random(), 2)])
        rec = _rec(tid, rng.choice([1.0, 3.0, 9.0]) if tid > 20 else 1.0, cost, "2026-12-07T10:00:00", status)
        seen.append(rec)
        view.finished(rec)
        assert view.incumbent is select_incumbent(seen)
    view.load(seen[:50])
    assert view.incumbent is select_incumbent(seen[:50])


def _tied_rundir(root: Path) -> RunDir:
    """Trials 2 and 3 tie at the top budget; 3 finished first (the table's order puts it first)."""
    import torch

    rd = RunDir(root)
    root.mkdir(parents=True)
    rd.study_file.write_text(yaml.safe_dump({"name": "ties", "metric": {"energy": "energy_mae_per_atom",
                                                                         "forces": "force_mae", "force_weight": 0.0}}))
    rd.write_state({"study": "ties", "optimizer": "smac-mf", "mode": "joint", "metric": "val energy_mae_per_atom",
                    "fidelity": [{"budget": 1.0}, {"budget": 3.0}]})
    recs = [_rec(1, 1.0, 0.01, "2026-12-03T10:00:01+00:00"), _rec(3, 3.0, 0.2, "2026-12-03T10:00:02+00:00"),
            _rec(2, 3.0, 0.2, "2026-12-03T10:00:03+00:00"), _rec(4, 3.0, 0.3, "2026-12-03T10:00:04+00:00"),
            _rec(5, 9.0, None, "2026-12-03T10:00:05+00:00", status="CRASHED")]
    for r in recs:
        rd.write_trial(r)
        torch.save({"state": torch.zeros(1)}, rd.trial_dir(r.trial_id) / "checkpoint.pt")
    rd.write_table(sorted(recs, key=lambda r: r.finished_at))
    return rd


def _cli(*args: str, cwd: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "mfhpo.cli", *args], capture_output=True, text=True, cwd=cwd,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


def test_status_incumbent_export_and_report_pick_the_same_incumbent_on_a_tie(tmp_path):
    from mfhpo.report.load import load_study

    rd = _tied_rundir(tmp_path / "run")
    assert int(load_study(rd.root).incumbent()["trial_id"]) == 2
    out = _cli("status", str(rd.root), cwd=tmp_path)
    assert "incumbent: trial 2 (config 2" in out
    out = _cli("incumbent", str(rd.root), "--out", str(tmp_path / "inc"), cwd=tmp_path)
    assert out.startswith("incumbent: trial 2 at budget 3")
    assert json.loads((tmp_path / "inc" / "manifest.json").read_text())["incumbent_trial"] == 2
    _cli("report", str(rd.root), "--out", str(tmp_path / "report"), cwd=tmp_path)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "incumbent: trial 2 (config 2" in summary and "incumbent: trial 3" not in summary


@pytest.mark.parametrize("cheap, dropped", [({"num_layers": 1}, {"nodes_2"}), ({"num_layers": 2}, set())])
def test_drop_inactive_follows_the_space_conditions(tmp_path, cheap, dropped):
    from mfhpo.study.config import load_study
    from mfhpo.study.space import build_space_spec
    from mfhpo.study.stages import drop_inactive

    study = load_study(Path(__file__).resolve().parents[1] / "spaces" / "demo.yaml")
    spec = build_space_spec(study, "demo.yaml")
    flat = {"num_layers": 2, "nodes_1": 8, "nodes_2": 8, "lr": 0.01, **cheap}
    assert set(flat) - set(drop_inactive(spec, flat)) == dropped


def test_a_record_outside_the_stage_space_is_reported_not_skipped_silently():
    from mfhpo.study.config import load_study
    from mfhpo.study.resume import configurations
    from mfhpo.study.space import build_space_spec, to_configspace

    study = load_study(Path(__file__).resolve().parents[1] / "spaces" / "demo.yaml")
    spec = build_space_spec(study, "demo.yaml")
    cs = to_configspace(spec, seed=0)
    good = dict(cs.get_default_configuration())
    recs = [TrialRecord(trial_id=1, searched=good), TrialRecord(trial_id=2, searched={**good, "lr": 99.0})]
    notes: list[str] = []
    out = configurations(recs, cs, notes.append)
    assert [r.trial_id for r, _ in out] == [1]
    assert len(notes) == 1 and notes[0].startswith("trial 2: its configuration is not in the stage's space")
