"""The run directory ``runs/<study>/``: study copy + hash, state, trial folders, trial table.

Layout::

    study.yaml          copy of the study file (study.hash: its sha256 prefix)
    state.json          optimizer, stage progress, trial counter, provenance (data hashes, versions)
    smac/<stage>/...    SMAC state (runhistory.json, intensifier.json, ...)
    trials/<id>/        trial.json, config.yaml, metrics.json, learning_curve.csv, train.log, checkpoint.pt
    trials.csv          one row per finished trial (pandas-readable)
    data/               generated demo data (never copies of user data)
    feature_cache/      shared GMP feature cache

Every file is written atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable

from mfhpo.atomic import atomic_open
from mfhpo.errors import MfhpoError
from mfhpo.study.trial import FINISHED, TrialRecord, jsonable  # noqa: F401 - FINISHED: one name for readers

BASE_COLUMNS = [
    "trial_id", "config_id", "budget", "epochs", "subset_fraction", "seed", "status", "cost", "optimizer",
    "stage", "warm_started", "warm_start_from", "epoch_equivalents", "epochs_saved", "time_saved_s",
    "wall_time_s", "featurize_time_s", "train_time_s", "load_time_s", "split_time_s", "setup_time_s",
    "evaluate_time_s", "save_time_s", "worker", "device", "started_at", "finished_at",
]


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """``fsync=False`` for files that a power loss may take back without harm (a killed process
    cannot: the rename is atomic either way)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, fsync=fsync) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode(), fsync=fsync)


def atomic_write_json(path: Path, obj: Any, fsync: bool = True) -> None:
    atomic_write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n", fsync=fsync)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root)

    # paths
    @property
    def study_file(self) -> Path:
        return self.root / "study.yaml"

    @property
    def hash_file(self) -> Path:
        return self.root / "study.hash"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def smac_dir(self) -> Path:
        return self.root / "smac"

    @property
    def trials_dir(self) -> Path:
        return self.root / "trials"

    @property
    def table_file(self) -> Path:
        return self.root / "trials.csv"

    def trial_dir(self, trial_id: int) -> Path:
        return self.trials_dir / f"{int(trial_id):05d}"

    def exists(self) -> bool:
        return self.state_file.exists()

    # state
    def read_state(self) -> dict:
        return read_json(self.state_file) if self.state_file.exists() else {}

    def write_state(self, state: dict) -> None:
        atomic_write_json(self.state_file, state)

    # preparation and lock
    def lock(self):
        """The run lock (``run.lock``, flock): one ``mfhpo run`` per run directory."""
        from mfhpo.study.lock import RunLock

        return RunLock(self.root / "run.lock")

    def prepare(self, study, kind: str) -> "RunDir":
        """A new run directory gets the study file and its hash; an existing one must have been started
        from the same study file and optimizer."""
        if self.exists():
            state = self.read_state()
            old = state.get("study_hash")
            if old and old != study.file_hash():
                raise MfhpoError(f"{study.path}: changed since {self.root} was started (hash {study.file_hash()} "
                                 f"!= {old}); restore it or use a new --rundir")
            if state.get("optimizer") and state["optimizer"] != kind:
                raise MfhpoError(f"{self.root}: was run with optimizer {state['optimizer']}, not {kind}; "
                                 "use a new --rundir")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.study_file, study.text)
            atomic_write_text(self.hash_file, study.file_hash() + "\n")
        return self

    # trials
    def trial_records(self) -> list[TrialRecord]:
        """Every trial folder's record, by trial id (a torn trial.json is skipped: its trial re-runs)."""
        out = []
        if not self.trials_dir.exists():
            return out
        for d in sorted(self.trials_dir.iterdir()):
            f = d / "trial.json"
            if f.exists():
                try:
                    out.append(TrialRecord.from_json(read_json(f)))
                except json.JSONDecodeError:
                    continue
        out.sort(key=lambda r: r.trial_id)
        return out

    def write_trial(self, rec: TrialRecord, fsync: bool = True) -> None:
        atomic_write_json(self.trial_dir(rec.trial_id) / "trial.json", rec.to_json(), fsync=fsync)

    def write_table(self, records: Iterable[TrialRecord] | None = None) -> Path:
        """Rewrite trials.csv in full: one row per finished trial, columns the union over rows."""
        records = self.trial_records() if records is None else list(records)
        rows = [r.table_row() for r in records if r.finished]
        cols = table_columns(rows)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(_csv_values(r, cols))
        atomic_write_text(self.table_file, buf.getvalue())
        self._table_columns = cols
        return self.table_file

    def append_table_row(self, rec: TrialRecord, records: Iterable[TrialRecord]) -> None:
        """Add the finished trial ``rec`` to trials.csv as one appended line (O(1) per trial).

        The file is rewritten in full from ``records`` instead when this RunDir has not written it
        yet (so a line torn by a killed run is repaired once per run) or when the row has a column
        the header lacks (e.g. the first successful trial after crashed ones)."""
        row = rec.table_row()
        cols = getattr(self, "_table_columns", None)
        if cols is None or not self.table_file.exists() or not set(row) <= set(cols):
            self.write_table(records)
            return
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore").writerow(_csv_values(row, cols))
        with open(self.table_file, "a", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())


def table_columns(rows: list[dict]) -> list[str]:
    metric_cols: list[str] = []
    cfg_cols: list[str] = []
    for r in rows:
        for k in r:
            if k.startswith("val_") and k not in metric_cols:
                metric_cols.append(k)
            elif k.startswith("cfg.") and k not in cfg_cols:
                cfg_cols.append(k)
    return BASE_COLUMNS + sorted(metric_cols) + sorted(cfg_cols)


def _csv_values(row: dict, cols: list[str]) -> dict:
    return {k: ("" if row.get(k) is None else row.get(k)) for k in cols}


