"""What a trial costs besides its epochs, per budget, from a study's trial table.

    python benchmarks/trial_overhead.py runs/md17_aspirin [--budget 1]

Reads ``RUNDIR/trials.csv`` (one row per trial; the step timings that ``mfhpo.train`` records) and
prints, per budget, the median seconds of each step of the successful trials on the worker:
loading the data set, the split and warm-start decision, featurizing (training subset and validation
set, through the feature cache), building the potential, the epochs themselves (``fit``, with their
per-epoch validation passes), the final evaluation and saving the checkpoint; the fixed part is every
step but the epochs, and its share is taken of each trial's worker seconds (load + train's total).
The target for the lowest budget: fixed share <= 20 %.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

STEPS = ["load_time_s", "split_time_s", "featurize_time_s", "setup_time_s", "evaluate_time_s", "save_time_s"]
TARGET = 0.20


def overhead_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per budget: trials, medians of worker seconds, each fixed step, the epochs, and the fixed share."""
    ok = trials[trials["status"] == "SUCCESS"].copy()
    missing = [c for c in STEPS if c not in ok.columns]
    if missing:
        raise SystemExit(f"trials.csv has no {', '.join(missing)}: the study ran before step timings were recorded")
    ok[STEPS] = ok[STEPS].fillna(0.0).astype(float)
    ok["worker_s"] = ok["wall_time_s"].astype(float) + ok["load_time_s"]
    ok["fixed_s"] = ok[STEPS].sum(axis=1)
    ok["epochs_s"] = ok["worker_s"] - ok["fixed_s"]
    ok["fixed_share"] = ok["fixed_s"] / ok["worker_s"]
    cols = ["worker_s", *STEPS, "epochs_s", "fixed_s", "fixed_share"]
    # two-stage studies: the descriptor stage featurizes a new descriptor per trial, the model stage reads
    # its one descriptor's features from the cache, so their fixed parts differ
    keys = ["stage", "budget"] if "stage" in ok.columns and ok["stage"].nunique() > 1 else ["budget"]
    out = ok.groupby(keys)[cols].median()
    out.insert(0, "trials", ok.groupby(keys).size())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rundir", type=Path)
    a = ap.parse_args(argv)
    path = a.rundir / "trials.csv"
    if not path.exists():
        print(f"{path}: not found", file=sys.stderr)
        return 2
    table = overhead_table(pd.read_csv(path))
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3g}".format):
        print(f"{a.rundir}: median seconds per successful trial on the worker, by budget")
        print(table.rename(columns=lambda c: c.removesuffix("_s").removesuffix("_time")).to_string())
    budgets = table.index.get_level_values("budget")
    for key, row in table[budgets == budgets.min()].iterrows():
        what = f"stage {key[0]}, budget {key[1]:g}" if isinstance(key, tuple) else f"budget {key:g}"
        verdict = "HOLDS" if np.isfinite(row["fixed_share"]) and row["fixed_share"] <= TARGET else "NOT MET"
        print(f"lowest budget ({what}): fixed {row['fixed_s']:.3g} s of {row['worker_s']:.3g} s "
              f"({100 * row['fixed_share']:.0f} %); target <= {100 * TARGET:.0f} %: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
