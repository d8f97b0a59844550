"""mfhpo report: loading, derived numbers, importance, and the full report on demo-like studies."""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import report_synthetic  # noqa: E402

from mfhpo.cli import main  # noqa: E402
from mfhpo.errors import MfhpoError  # noqa: E402
from mfhpo.report import analysis, load_study, tables  # noqa: E402
from mfhpo.report.importance import rf_fanova  # noqa: E402


def _table(rundir: Path, rows: list[dict]) -> None:
    rundir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(rundir / "trials.csv", index=False)


def _row(tid, cid, budget, cost, status="SUCCESS", opt="smac-mf", ee=1.0, wall=60.0, minute=0):
    return {"trial_id": tid, "config_id": cid, "budget": budget, "status": status, "cost": cost,
            "optimizer": opt, "epoch_equivalents": ee, "wall_time_s": wall,
            "started_at": f"2026-01-01T00:{minute:02d}:00+00:00", "finished_at": f"2026-01-01T00:{minute + 1:02d}:00+00:00",
            "val_energy_mae_per_atom": cost, "cfg.training.lr": 1e-3 * (tid + 1)}


def test_trajectory_counts_only_the_highest_budget_and_all_compute(tmp_path):
    rows = [_row(0, 0, 1, 0.05, minute=0), _row(1, 1, 1, 0.02, minute=1),
            _row(2, 1, 3, None, status="CRASHED", ee=3, minute=2),
            _row(3, 1, 3, 0.04, ee=3, minute=3), _row(4, 0, 3, 0.03, ee=3, minute=4),
            _row(5, 2, 9, 0.5, opt="random", ee=9, minute=5)]
    _table(tmp_path / "s", rows)
    s = load_study(tmp_path / "s")
    assert s.objective == "val_energy_mae_per_atom"  # detected: cost equals this column
    tr = analysis.trajectories(s)
    mf = tr["smac-mf"]
    # incumbent at budget 1 is 0.02; once budget 3 is reached the budget-1 result no longer counts
    assert mf["incumbent_cost"].tolist() == [0.05, 0.02, 0.02, 0.04, 0.03]
    assert mf["epoch_equivalents"].tolist() == [1, 2, 5, 8, 11]  # the crashed trial's compute counts
    assert mf["worker_hours"].iloc[-1] == pytest.approx(5 * 60 / 3600)
    assert tr["random"]["incumbent_cost"].tolist() == [0.5]
    r = analysis.rungs(s, "smac-mf").set_index("budget")
    assert r.loc[3.0, "promoted"] == 2 and r.loc[3.0, "failed"] == 1 and r.loc[1.0, "configs"] == 2
    inc = s.incumbent()
    assert inc["trial_id"] == 5  # best at the highest budget (9), even though it is worse


def _spec(rundir: Path, data: str) -> None:
    (rundir / "study.yaml").write_text(yaml.safe_dump({"name": rundir.name, "data": {"train": data},
                                                       "metric": {"energy": "energy_mae_per_atom"}}))


def test_compute_to_reach_compares_only_studies_of_the_same_problem(tmp_path):
    mf = [_row(0, 0, 1, 0.05, ee=1, minute=0), _row(1, 1, 1, 0.01, ee=1, minute=1),  # budget 1: not results
          _row(2, 1, 3, 0.04, ee=3, minute=2), _row(3, 1, 9, 0.035, ee=9, minute=3),
          _row(4, 2, 9, 0.02, ee=9, minute=4)]
    rnd = [_row(0, 0, 9, 0.03, opt="random", ee=9, minute=0), _row(1, 1, 9, 0.025, opt="random", ee=9, minute=1),
           _row(2, 2, 9, 0.06, opt="random", ee=9, minute=2)]
    for name, rows, data in [("mf", mf, "a.xyz"), ("rnd", rnd, "a.xyz"), ("other", rnd, "b.xyz")]:
        _table(tmp_path / name, rows)
        _spec(tmp_path / name, data)
    a, b, c = (load_study(tmp_path / n) for n in ("mf", "rnd", "other"))
    assert analysis.comparable(a, b) and not analysis.comparable(a, c)
    r = analysis.compute_to_reach(a, b)  # random's final best 0.025: mf reaches it with trial 4
    assert r["target"] == 0.025 and r["a_epoch_equivalents"] == 23 and r["b_total"] == 27 and r["b_self"] == 18
    assert r["ratio"] == pytest.approx(23 / 27)
    back = analysis.compute_to_reach(b, a)  # mf's 0.02 is never reached by random
    assert np.isnan(back["a_epoch_equivalents"]) and back["b_self"] == 23
    table = tables.compute_to_reach([a, b, c]).markdown()
    assert "| mf | rnd | 0.025 | 23 | 27 | 0.85 | 18 |" in table and "other" not in table


def test_partial_and_resumed_tables_are_read(tmp_path):
    rows = [_row(0, 0, 1, 0.05, minute=0), _row(1, 1, 1, 0.04, minute=1), _row(1, 1, 1, 0.03, minute=2)]
    _table(tmp_path / "s", rows)
    text = (tmp_path / "s" / "trials.csv").read_text()
    (tmp_path / "s" / "trials.csv").write_text(text + "2,2,1,SUCC")  # a line being written right now
    s = load_study(tmp_path / "s")
    assert s.trials["trial_id"].tolist() == [0, 1]  # duplicate (resume): last row wins; half line dropped
    assert s.trials.loc[s.trials["trial_id"] == 1, "cost"].item() == 0.03
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MfhpoError, match="not a study run directory"):  # no study copy, state or table
        load_study(empty)
    (empty / "study.yaml").write_text("name: empty\n")  # a run that has just started: no trials.csv yet
    s2 = load_study(empty)
    assert s2.trials.empty and s2.incumbent() is None and s2.notes
    with pytest.raises(MfhpoError, match="run directory not found"):
        load_study(tmp_path / "missing")


def test_importance_ranks_the_driving_hyperparameter_first():
    rng = np.random.default_rng(0)
    n = 40
    df = pd.DataFrame({"cfg.lr": 10 ** rng.uniform(-4, -1, n), "cfg.width": rng.integers(8, 64, n),
                       "cfg.act": rng.choice(["tanh", "silu"], n)})
    df["cost"] = 0.01 * (1 + 4 * (np.log10(df["cfg.lr"]) + 2.5) ** 2) * np.exp(rng.normal(0, 0.02, n))
    imp, info = rf_fanova(df, ["cfg.lr", "cfg.width", "cfg.act"])
    assert imp["hp"].iloc[0] == "cfg.lr"
    assert imp["importance"].iloc[0] > 0.6 > imp["importance"].iloc[1:].max()
    assert info["r2_oob"] > 0.5 and (imp["std"] >= 0).all()


def _check_report(out: Path, n_figures_min: int, embedded: bool = True) -> str:
    html = (out / "report.html").read_text()
    md = (out / "summary.md").read_text()
    figs = sorted((out / "figures").glob("*.png"))
    assert len(figs) >= n_figures_min
    for f in figs:
        data = f.read_bytes()
        assert len(data) > 5000 and data[:8] == b"\x89PNG\r\n\x1a\n", f
        if embedded:
            assert base64.b64encode(data).decode() in html, f"{f.name} not embedded in report.html"
        else:
            assert f"src='figures/{f.name}'" in html, f"{f.name} not linked from report.html"
        assert f"figures/{f.name}" in md, f"{f.name} not referenced in summary.md"
    assert "<script" not in html and not re.search(r"(src|href)=['\"]https?://", html)  # offline
    assert ("data:image/png" in html) == embedded
    return html


def test_report_on_two_demo_like_studies_via_cli(tmp_path, capsys):
    a = report_synthetic.build(tmp_path / "runs", name="oc20-like", seed=0)
    b = report_synthetic.build(tmp_path / "runs", name="aspirin-like", seed=1, random_reference=False,
                               force_weight=1.0)
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as exc:
        main(["report", str(a), str(b), "--out", str(out)])
    assert exc.value.code in (0, None)
    html = _check_report(out, 11)
    names = {f.name for f in (out / "figures").glob("*.png")}
    for study in ("oc20-like", "aspirin-like"):
        for kind in ("progress", "budgets", "learning_curves", "energy_force_front", "configurations", "importance"):
            assert f"{study}_{kind}.png" in names
    assert "all_studies_progress.png" in names
    # incumbent numbers straight from the trial table, next to baselines and units
    s = load_study(a)
    inc = s.incumbent()
    assert f"{inc['val_energy_mae_per_atom']:.4g} eV/atom" in html
    assert "Optimal hyperparameters and their importance" in html and "free atoms" in html
    assert "has no checkpoint.pt: parity plots skipped" in html
    assert "cost = energy MAE / atom [eV/atom] + 1 × force MAE (all atoms) [eV/Å]" in html


def test_two_runs_of_one_study_get_distinct_columns(tmp_path):
    """Two run directories of the same study file (mfhpo run --rundir) are told apart, not merged."""
    import shutil

    a = report_synthetic.build(tmp_path / "runs", name="same", seed=0)
    b = tmp_path / "runs" / "same_rerun"
    shutil.copytree(a, b)
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as exc:
        main(["report", str(a), str(b), "--out", str(out)])
    assert exc.value.code in (0, None)
    summary = (out / "summary.md").read_text()
    assert "same (same)" in summary and "same (same_rerun)" in summary


def test_linked_figures_keep_report_html_small(tmp_path):
    a = report_synthetic.build(tmp_path / "runs", name="linked", seed=0)
    with pytest.raises(SystemExit) as exc:
        main(["report", str(a), "--out", str(tmp_path / "embedded")])
    assert exc.value.code in (0, None)
    with pytest.raises(SystemExit) as exc:
        main(["report", str(a), "--out", str(tmp_path / "linked"), "--link-figures"])
    assert exc.value.code in (0, None)
    _check_report(tmp_path / "linked", 5, embedded=False)
    small, big = (tmp_path / "linked" / "report.html").stat().st_size, (tmp_path / "embedded" / "report.html").stat().st_size
    assert small * 5 < big


def test_report_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run directory not found" in err


def test_report_parity_with_a_real_checkpoint(tmp_path):
    """A trained incumbent: parity plots on validation and test split, consistent with the trial table."""
    from mfhpo.config import Fidelity, TrialConfig
    from mfhpo.data import Dataset
    from mfhpo.demo import generate_demo
    from mfhpo.train import train

    rundir = report_synthetic.build(tmp_path / "runs", name="trained", seed=2, random_reference=False)
    spec = yaml.safe_load((rundir / "study.yaml").read_text())
    spec["data"].update(demo_structures=30, demo_seed=0)
    (rundir / "study.yaml").write_text(yaml.safe_dump(spec))
    s = load_study(rundir)
    tid = s.incumbent()["trial_id"]
    ds = Dataset.from_images(generate_demo(n_structures=30, seed=0), source="demo")
    cfg = TrialConfig.model_validate({"training": {"epochs": 3, "force_coefficient": 0.1, "device": "cpu"},
                                      "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
                                      "model": {"hidden_layers": [8]}})
    res = train(cfg, ds, Fidelity(epochs=3), s.trial_dir(tid), progress=False)
    table = pd.read_csv(rundir / "trials.csv")
    i = table.index[table["trial_id"] == tid][0]
    for k, v in res.metrics["val"].items():
        if f"val_{k}" in table:
            table.loc[i, f"val_{k}"] = v
    table.loc[i, "cost"] = res.metrics["val"]["energy_mae_per_atom"]
    others = (table["trial_id"] != tid) & (table["budget"] == table.loc[i, "budget"])
    table.loc[others, ["cost", "val_energy_mae_per_atom"]] += 10.0  # keep the trained trial the incumbent
    table.to_csv(rundir / "trials.csv", index=False)
    assert load_study(rundir).incumbent()["trial_id"] == tid
    out = tmp_path / "report"
    main_res = None
    try:
        main(["report", str(rundir), "--out", str(out)])
    except SystemExit as exc:
        main_res = exc.code
    assert main_res in (0, None)
    html = _check_report(out, 7)
    names = {f.name for f in (out / "figures").glob("*.png")}
    assert {"trained_parity.png", "trained_error_vs_size.png"} <= names
    assert "parity plots skipped" not in html
    assert "differs from the trial table" not in html  # the rebuilt split is the trained one
    assert "test (held-out split of the train file)" in html
    # each split's row carries its baselines: "<model> eV/atom (<baseline>)"
    row = re.search(r"<td>test \(held-out split of the train file\)</td><td>\d+</td><td>([^<]*)</td>", html)
    assert row and re.fullmatch(r"[\d.e-]+ eV/atom \([\d.e-]+\)", row.group(1)), row


def test_figure_ticks_are_plain_numbers(tmp_path):
    """No ``1.45×10⁰`` tick labels, on narrow and on wide log ranges."""
    import matplotlib.pyplot as plt

    from mfhpo.report import figures

    for lo, hi in ((1.3, 1.7), (1e-3, 2.0)):
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], [lo, (lo + hi) / 2, hi])
        figures.log_scale(ax, [lo, hi])
        fig.canvas.draw()
        labels = [t.get_text() for t in ax.get_yticklabels(minor=False) + ax.get_yticklabels(minor=True)]
        assert any(labels) and not any("$" in x or "times" in x or "×" in x for x in labels), labels
        plt.close(fig)
    s = load_study(report_synthetic.build(tmp_path / "runs", name="ticks", seed=0))
    fig = figures.progress(s)
    fig.canvas.draw()
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) + ax.get_xticklabels()]
        assert not any("$" in x or "×" in x for x in labels), labels
    plt.close(fig)


def test_compute_to_match_lists_only_pairs_of_different_optimizers(tmp_path):
    rows = {"mf": [_row(0, 0, 9, 0.03, ee=9)], "mf2": [_row(0, 0, 9, 0.02, ee=9)],
            "bo": [_row(0, 0, 9, 0.025, opt="smac-bo", ee=9)], "rnd": [_row(0, 0, 9, 0.04, opt="random", ee=9)]}
    for name, r in rows.items():
        _table(tmp_path / name, r)
        _spec(tmp_path / name, "a.xyz")
    studies = [load_study(tmp_path / n) for n in rows]
    pairs = {(a.name, b.name) for a, b in tables.meaningful_pairs(studies)}
    assert pairs == {("mf", "rnd"), ("mf2", "rnd"), ("bo", "rnd")}  # each optimizer against random search
    without_random = studies[:3]
    pairs = {(a.name, b.name) for a, b in tables.meaningful_pairs(without_random)}
    assert pairs == {("mf", "bo"), ("bo", "mf"), ("mf2", "bo"), ("bo", "mf2")}  # never two smac-mf runs


def test_pareto_front_keeps_exactly_the_undominated_points():
    from mfhpo.report.figures import pareto_front

    e = np.array([1.0, 2.0, 3.0, 1.5, 2.5, 1.0])
    f = np.array([5.0, 2.0, 1.0, 4.0, 3.0, 6.0])
    # (2.5, 3) is dominated by (2, 2); (1, 6) by (1, 5); the rest trade energy for force
    assert pareto_front(e, f).tolist() == [0, 3, 1, 2]
