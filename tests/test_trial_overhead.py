"""benchmarks/trial_overhead.py: the fixed part of a trial's worker seconds, per budget, from trials.csv."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def overhead():
    return load_benchmark("trial_overhead")


def _row(budget, wall, load, feat, status="SUCCESS"):
    return {"budget": budget, "status": status, "wall_time_s": wall, "load_time_s": load, "split_time_s": 0.1,
            "featurize_time_s": feat, "setup_time_s": 0.1, "evaluate_time_s": 0.2, "save_time_s": 0.1}


def test_fixed_share_per_budget(overhead, tmp_path, capsys):
    rows = [_row(1, 9.0, 1.0, 2.0), _row(1, 9.0, 1.0, 2.0), _row(1, 99.0, 1.0, 90.0, status="CRASHED"),
            _row(3, 39.0, 1.0, 2.0)]
    pd.DataFrame(rows).to_csv(tmp_path / "trials.csv", index=False)
    t = overhead.overhead_table(pd.read_csv(tmp_path / "trials.csv"))
    # budget 1: worker 9 + 1 = 10 s, fixed 1 + 0.1 + 2 + 0.1 + 0.2 + 0.1 = 3.5 s (the crashed trial left out)
    assert t.loc[1, "trials"] == 2 and t.loc[1, "worker_s"] == pytest.approx(10.0)
    assert t.loc[1, "fixed_s"] == pytest.approx(3.5) and t.loc[1, "fixed_share"] == pytest.approx(0.35)
    assert t.loc[3, "fixed_share"] == pytest.approx(3.5 / 40.0)
    assert overhead.main([str(tmp_path)]) == 0
    assert "lowest budget (budget 1): fixed 3.5 s of 10 s (35 %); target <= 20 %: NOT MET" in capsys.readouterr().out


def test_old_tables_are_named(overhead):
    with pytest.raises(SystemExit, match="no load_time_s"):
        overhead.overhead_table(pd.DataFrame([{"budget": 1, "status": "SUCCESS", "wall_time_s": 1.0}]))


def test_two_stage_studies_per_stage(overhead):
    rows = [dict(_row(1, 9.0, 1.0, 2.0), stage="descriptor"), dict(_row(1, 9.0, 1.0, 0.2), stage="model")]
    t = overhead.overhead_table(pd.DataFrame(rows))
    assert t.loc[("descriptor", 1), "fixed_s"] == pytest.approx(3.5)
    assert t.loc[("model", 1), "fixed_s"] == pytest.approx(1.7)
