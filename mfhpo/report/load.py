"""Load a run directory: the trial table (the single source of every number in a report), the study
file, and the per-trial files (learning curves, metrics, configs).

Tolerant by design: a study that is still running may have a half-written last line, a resumed one
may list a trial twice (the last row wins), and optional columns may be missing.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mfhpo.errors import MfhpoError
from mfhpo.study.trial import Candidate, select_incumbent

CFG_PREFIX = "cfg."
SUCCESS = "SUCCESS"


@dataclass
class StudyResults:
    """One run directory, loaded."""

    name: str
    rundir: Path
    spec: dict  # the study file (study.yaml), {} when absent
    trials: pd.DataFrame  # every finished trial (all statuses), in finishing order
    objective: str  # the trial-table column that ``cost`` is ("val_energy_mae_per_atom", ...; "cost" if unknown)
    objective_label: str = "cost"  # axis label with units
    notes: list[str] = field(default_factory=list)
    problem: dict | None = None  # data hash, split and metric: studies with equal problems have comparable costs

    # ---- views (all derived from ``trials``) -------------------------------------------------
    @property
    def ok(self) -> pd.DataFrame:
        """Successful trials with a finite cost."""
        t = self.trials
        return t[(t["status"] == SUCCESS) & np.isfinite(t["cost"].astype(float))]

    @property
    def hp_columns(self) -> list[str]:
        return [c for c in self.trials.columns if c.startswith(CFG_PREFIX)]

    @property
    def optimizers(self) -> list[str]:
        return sorted(self.trials["optimizer"].dropna().astype(str).unique().tolist())

    @property
    def budgets(self) -> list[float]:
        return sorted(self.trials["budget"].dropna().astype(float).unique().tolist())

    def incumbent(self) -> pd.Series | None:
        """The incumbent's row (the study's one rule: :func:`mfhpo.study.trial.select_incumbent`)."""
        ok = self.ok
        best = select_incumbent(Candidate(int(t), str(s), float(b), float(c))
                                for t, s, b, c in zip(ok["trial_id"], ok["status"], ok["budget"], ok["cost"]))
        if best is None:
            return None
        return ok.loc[ok["trial_id"].astype(int) == best.trial_id].iloc[0]

    def trial_dir(self, trial_id) -> Path:
        """trials/<id> as the study engine names it (zero-padded ``00012``, or plain ``12``)."""
        root = self.rundir / "trials"
        names = [str(trial_id)]
        try:
            names.insert(0, f"{int(float(trial_id)):05d}")
        except (TypeError, ValueError):
            pass
        for n in names:
            if (root / n).is_dir():
                return root / n
        return root / names[0]

    def learning_curve(self, trial_id) -> pd.DataFrame | None:
        return read_csv_tolerant(self.trial_dir(trial_id) / "learning_curve.csv")

    def trial_json(self, trial_id) -> dict:
        p = self.trial_dir(trial_id) / "trial.json"
        try:
            return json.loads(p.read_text()) if p.exists() else {}
        except (OSError, json.JSONDecodeError):
            return {}

    def trial_metrics(self, trial_id) -> dict:
        p = self.trial_dir(trial_id) / "metrics.json"
        try:
            return json.loads(p.read_text()) if p.exists() else {}
        except (OSError, json.JSONDecodeError):
            return {}


# ---------------------------------------------------------------------------------------------


def read_csv_tolerant(path: Path) -> pd.DataFrame | None:
    """Read a CSV that another process may be appending to; None when absent or empty."""
    path = Path(path)
    if not path.exists():
        return None
    text = path.read_text(errors="replace")
    if not text.strip():
        return None
    if not text.endswith("\n"):  # a line being written right now: drop it
        text = text[: text.rfind("\n") + 1] if "\n" in text else ""
    if not text.strip():
        return None
    try:
        return pd.read_csv(io.StringIO(text), on_bad_lines="skip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise MfhpoError(f"{path}: cannot parse CSV ({str(exc).splitlines()[0]})") from None


def _to_time(s: pd.Series) -> pd.Series:
    if s.dtype.kind in "if":
        return pd.to_datetime(s, unit="s", utc=True, errors="coerce")
    return pd.to_datetime(s, utc=True, errors="coerce", format="mixed")


def _load_spec(rundir: Path) -> dict:
    for name in ("study.yaml", "study.yml"):
        p = rundir / name
        if p.exists():
            try:
                data = yaml.safe_load(p.read_text())
            except yaml.YAMLError:
                raise MfhpoError(f"{p}: invalid YAML") from None
            return data if isinstance(data, dict) else {}
    return {}


def _load_problem(rundir: Path, spec: dict) -> dict | None:
    """What makes two studies' costs comparable: the training data (hash), the split and the metric,
    from the run's state.json (written by ``mfhpo run``); else the study file's data and metric."""
    p = rundir / "state.json"
    if p.exists():
        try:
            state = json.loads(p.read_text())
            data = state["provenance"]["data"]
            return {"train": data["train"]["hash"], "split": data["split"], "test": data.get("test", {}).get("hash"),
                    "metric": state.get("metric")}
        except (ValueError, KeyError, TypeError):
            pass
    if spec.get("data") is not None:
        return {"data": spec.get("data"), "metric": spec.get("metric")}
    return None


def _objective_column(trials: pd.DataFrame, spec: dict) -> str:
    """Which ``val_*`` column ``cost`` is: the one it equals on every successful row, else the study file."""
    ok = trials[trials["status"] == SUCCESS]
    cost = ok["cost"].astype(float).to_numpy()
    if len(ok):
        for col in [c for c in trials.columns if c.startswith("val_")]:
            v = pd.to_numeric(ok[col], errors="coerce").to_numpy()
            if np.all(np.isfinite(v)) and np.allclose(v, cost, rtol=1e-9, atol=0):
                return col
    obj = spec.get("metric")
    if isinstance(obj, dict):
        obj = obj.get("metric", obj.get("name"))
    if isinstance(obj, str):
        return obj if obj.startswith("val_") or obj == "cost" else f"val_{obj}"
    return "cost"


def objective_label(column: str, spec: dict) -> str:
    """Axis label of the minimised metric, with units."""
    from mfhpo.report.metrics_info import axis_label, metric_info

    if column != "cost":
        return axis_label(column)
    m = spec.get("metric") if isinstance(spec.get("metric"), dict) else {}
    energy = m.get("energy", "energy_mae_per_atom")
    forces = m.get("forces", "force_mae")
    w = float(m.get("force_weight", 1.0) or 0.0)
    if not m:
        return "cost (validation)"
    e = metric_info(energy)
    if not forces or w == 0:
        return f"validation {e.label} [{e.unit}]"
    f = metric_info(forces)
    return f"cost = {e.label} [{e.unit}] + {w:g} × {f.label} [{f.unit}]"


def load_trials(rundir: str | Path) -> pd.DataFrame:
    """THE loading function for the trial table: typed, deduplicated, in finishing order.

    Missing optional columns are filled (optimizer ``unknown``, stage ``joint``,
    epoch_equivalents = epochs × subset_fraction, budget = epoch_equivalents).
    """
    rundir = Path(rundir)
    df = read_csv_tolerant(rundir / "trials.csv")
    if df is None:
        df = pd.DataFrame(columns=["trial_id", "status", "cost"])
    if "trial_id" not in df.columns:
        raise MfhpoError(f"{rundir / 'trials.csv'}: no trial_id column")
    df = df.drop_duplicates(subset="trial_id", keep="last").copy()
    df["status"] = df.get("status", pd.Series(SUCCESS, index=df.index)).fillna("UNKNOWN").astype(str).str.upper()
    for col in ["cost", "budget", "epochs", "subset_fraction", "epoch_equivalents", "wall_time_s",
                "featurize_time_s", "train_time_s"]:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    if "cost" not in df.columns:
        df["cost"] = np.nan
    if "subset_fraction" not in df.columns:
        df["subset_fraction"] = 1.0
    if "epoch_equivalents" not in df.columns:
        df["epoch_equivalents"] = df["epochs"] * df["subset_fraction"] if "epochs" in df.columns else np.nan
    if "budget" not in df.columns:
        df["budget"] = df["epoch_equivalents"]
    if "optimizer" not in df.columns:
        df["optimizer"] = "unknown"
    df["optimizer"] = df["optimizer"].fillna("unknown").astype(str)
    if "stage" not in df.columns:
        df["stage"] = "joint"
    if "config_id" not in df.columns:
        df["config_id"] = df["trial_id"]
    if "wall_time_s" not in df.columns:
        df["wall_time_s"] = np.nan
    if "device" not in df.columns:
        df["device"] = ""
    for col in ["started_at", "finished_at"]:
        df[col] = _to_time(df[col]) if col in df.columns else pd.NaT
    for col in [c for c in df.columns if c.startswith("val_")]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    order = ["finished_at", "trial_id"] if df["finished_at"].notna().any() else ["trial_id"]
    df = df.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)
    return df


def load_study(rundir: str | Path) -> StudyResults:
    rundir = Path(rundir)
    if not rundir.is_dir():
        raise MfhpoError(f"{rundir}: run directory not found")
    if not any((rundir / n).exists() for n in ("state.json", "study.yaml", "trials.csv")):
        raise MfhpoError(f"{rundir}: not a study run directory (no state.json, study.yaml or trials.csv)")
    spec = _load_spec(rundir)
    trials = load_trials(rundir)
    notes = []
    if not (rundir / "trials.csv").exists():
        notes.append("no trials.csv yet: the study has no finished trial")
    if not spec:
        notes.append("no study.yaml in the run directory: study settings unknown")
    name = str(spec.get("name") or rundir.resolve().name)
    col = _objective_column(trials, spec)
    return StudyResults(name=name, rundir=rundir, spec=spec, trials=trials, objective=col,
                 objective_label=objective_label(col, spec), notes=notes, problem=_load_problem(rundir, spec))
