"""Predictions of the incumbent on the validation (and test) data: parity plots, error vs size.

The data are rebuilt from the study file (``data`` section) and checked against the checkpoint's
data hash; the split is rebuilt from the checkpoint's own configuration (``mfhpo.train.make_split``),
exactly as training made it. Anything missing (no checkpoint, data not found, hash mismatch)
becomes a note in the report instead of an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mfhpo.report.load import StudyResults  # noqa: E402

MAX_STRUCTURES = 400  # per split, to keep reports fast on big validation sets


@dataclass
class SplitPrediction:
    name: str  # "validation", "test (split of train file)", "test (file ...)"
    natoms: np.ndarray
    e_ref: np.ndarray
    e_pred: np.ndarray
    f_ref: np.ndarray | None = None  # (n_atoms_total, 3)
    f_pred: np.ndarray | None = None
    free: np.ndarray | None = None  # (n_atoms_total,) bool
    note: str = ""
    metrics: dict = field(default_factory=dict)  # mfhpo.scoring.score(...).to_dict(): model and baselines


@dataclass
class Predictions:
    trial_id: object
    splits: list[SplitPrediction] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _recorded_paths(obj, key: str) -> list[str]:
    """Every string under a ``data`` mapping's ``key`` anywhere in a JSON-like object (state/trial files)."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "data" and isinstance(v, dict):
                entry = v.get(key)
                if isinstance(entry, dict):  # {"path": ..., "hash": ...}
                    entry = entry.get("path")
                if isinstance(entry, str):
                    out.append(entry)
            out += _recorded_paths(v, key)
    elif isinstance(obj, list):
        for v in obj:
            out += _recorded_paths(v, key)
    return out


def _candidates(study: StudyResults, rel: str, key: str, trial_id) -> list[Path]:
    """Where the data of ``data.<key>`` may be: paths recorded by the study engine first, then ``rel``
    relative to the run directory, its parents and the working directory."""
    import json

    recorded: list[str] = []
    for f in [study.rundir / "state.json", study.trial_dir(trial_id) / "trial.json"]:
        try:
            recorded += _recorded_paths(json.loads(f.read_text()), key)
        except (OSError, ValueError):
            pass
    out = [Path(p) for p in recorded]
    if rel == "demo" and key == "train":
        out += sorted(p for p in (study.rundir / "data").glob("*") if p.is_file())
    elif rel != "demo":
        p = Path(rel).expanduser()
        roots = [study.rundir, study.rundir.parent, study.rundir.parent.parent, Path.cwd(), Path.cwd() / "spaces"]
        out += [p] if p.is_absolute() else [r / p for r in roots]
    seen, uniq = set(), []
    for p in out:
        if str(p) not in seen and p.exists():
            seen.add(str(p))
            uniq.append(p)
    return uniq


def _load(study: StudyResults, rel: str, key: str, data: dict, trial_id, want_hash: str | None):
    """(Dataset, note) for ``data.<key>`` of the study file; Dataset None when not found / not matching."""
    from mfhpo.data import Dataset, load_dataset

    kw = dict(group_key=data.get("group_key"), max_force=data.get("max_force"))
    tried = 0
    for path in _candidates(study, rel, key, trial_id):
        try:
            ds = load_dataset(path, **kw)
        except Exception:
            continue
        tried += 1
        if want_hash is None or ds.hash() == want_hash:
            return ds, ""
    if rel == "demo" and key == "train":
        from mfhpo.demo import generate_demo

        images = generate_demo(n_structures=int(data.get("demo_structures", 160)), seed=int(data.get("demo_seed", 0)))
        ds = Dataset.from_images(images, source="demo", group_key=kw["group_key"])
        if want_hash is None or ds.hash() == want_hash:
            return ds, ""
        tried += 1
    if not tried:
        return None, f"data '{rel}' not found (looked at recorded paths, next to the run directory, and in the working directory)"
    return None, f"no copy of data '{rel}' matches the checkpoint's data hash (changed since the study ran?)"


def _predict_split(pot, ds, name: str, rng) -> SplitPrediction:
    from mfhpo.scoring import score_with_predictions

    note = ""
    if len(ds) > MAX_STRUCTURES:
        idx = np.sort(rng.choice(len(ds), MAX_STRUCTURES, replace=False))
        note = f"random sample of {MAX_STRUCTURES} of {len(ds)} structures"
        ds = ds.subset(idx)
    metrics, e, f = score_with_predictions(pot, ds)
    out = SplitPrediction(name, ds.natoms, np.asarray(ds.energies), np.asarray(e), note=note, metrics=metrics.to_dict())
    if f is not None and ds.forces is not None:
        out.f_ref = np.concatenate(ds.forces)
        out.f_pred = np.concatenate(f)
        out.free = np.concatenate(ds.free)
    return out


def incumbent_predictions(study: StudyResults) -> Predictions | None:
    """Predictions of the incumbent on validation and test data, or None (with the reason in study.notes)."""
    inc = study.incumbent()
    if inc is None:
        return None
    tid = inc["trial_id"]
    res = Predictions(tid)
    ck_path = study.trial_dir(tid) / "checkpoint.pt"
    if not ck_path.exists():
        res.notes.append(f"incumbent trial {tid} has no checkpoint.pt: parity plots skipped")
        return res
    data = study.spec.get("data") if isinstance(study.spec.get("data"), dict) else {}
    if not data.get("train"):
        res.notes.append("study.yaml has no data.train: parity plots skipped")
        return res
    try:
        from mfhpo.checkpoint import load_potential
        from mfhpo.train import make_split

        pot = load_potential(ck_path, device="cpu")
        ck = pot.checkpoint
        ds, note = _load(study, str(data["train"]), "train", data, tid, ck.get("data_hash"))
        if ds is None:
            res.notes.append(f"parity plots skipped: {note}")
            return res
        split = make_split(pot.config, ds)
        rng = np.random.default_rng(0)
        res.splits.append(_predict_split(pot, ds.subset(split.val), "validation", rng))
        if len(split.test):
            res.splits.append(_predict_split(pot, ds.subset(split.test), "test (held-out split of the train file)", rng))
        if data.get("test"):
            tds, note = _load(study, str(data["test"]), "test", data, tid, None)
            if tds is None:
                res.notes.append(f"test file skipped: {note}")
            else:
                res.splits.append(_predict_split(pot, tds, f"test (file {data['test']})", rng))
    except Exception as exc:  # a report must not die on one figure
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        res.notes.append(f"parity plots skipped: cannot predict with trial {tid}'s checkpoint ({msg})")
    return res


def _mae(a, b) -> float:
    return float(np.mean(np.abs(np.asarray(a) - np.asarray(b)))) if len(a) else float("nan")


def split_metrics(sp: SplitPrediction) -> dict:
    """MAEs of these predictions (used for the consistency check against the trial table)."""
    out = {"energy_mae": _mae(sp.e_pred, sp.e_ref),
           "energy_mae_per_atom": _mae(sp.e_pred / sp.natoms, sp.e_ref / sp.natoms)}
    if sp.f_ref is not None:
        out["force_mae"] = _mae(sp.f_pred, sp.f_ref)
        out["force_mae_free"] = _mae(sp.f_pred[sp.free], sp.f_ref[sp.free]) if sp.free.any() else float("nan")
    return out


def parity_figure(study: StudyResults, preds: Predictions) -> plt.Figure | None:
    splits = preds.splits
    if not splits:
        return None
    has_f = any(s.f_ref is not None for s in splits)
    ncol = 2 if has_f else 1
    fig, axes = plt.subplots(len(splits), ncol, figsize=(6 * ncol, 5 * len(splits)), constrained_layout=True,
                             squeeze=False)
    for row, sp in zip(axes, splits):
        m = split_metrics(sp)
        ax = row[0]
        er, ep = sp.e_ref / sp.natoms, sp.e_pred / sp.natoms
        ax.scatter(er, ep, s=10, alpha=0.7)
        lo, hi = min(er.min(), ep.min()), max(er.max(), ep.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel("reference energy per atom [eV/atom]")
        ax.set_ylabel("predicted energy per atom [eV/atom]")
        ax.set_title(f"{sp.name}: energy ({len(er)} structures)", fontsize=10)
        ax.text(0.03, 0.97, f"MAE {m['energy_mae_per_atom']:.4g} eV/atom\nMAE {m['energy_mae']:.4g} eV/structure",
                transform=ax.transAxes, va="top", fontsize=8, bbox=dict(fc="w", alpha=0.8))
        if ncol == 2:
            ax = row[1]
            if sp.f_ref is None:
                ax.set_axis_off()
                continue
            fixed = ~sp.free
            if fixed.any():
                ax.scatter(sp.f_ref[fixed].ravel(), sp.f_pred[fixed].ravel(), s=4, alpha=0.4, color="0.6",
                           label="fixed atoms (FixAtoms)")
            ax.scatter(sp.f_ref[sp.free].ravel(), sp.f_pred[sp.free].ravel(), s=4, alpha=0.5, color="tab:red",
                       label="free atoms")
            lo, hi = min(sp.f_ref.min(), sp.f_pred.min()), max(sp.f_ref.max(), sp.f_pred.max())
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_xlabel("reference force component [eV/Å]")
            ax.set_ylabel("predicted force component [eV/Å]")
            ax.set_title(f"{sp.name}: forces (per Cartesian component)", fontsize=10)
            ax.text(0.03, 0.97, f"MAE free atoms {m['force_mae_free']:.4g} eV/Å\n"
                    f"MAE all atoms {m['force_mae']:.4g} eV/Å", transform=ax.transAxes, va="top", fontsize=8,
                    bbox=dict(fc="w", alpha=0.8))
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{study.name}: incumbent (trial {preds.trial_id}) predicted vs reference")
    return fig


def size_figure(study: StudyResults, preds: Predictions) -> plt.Figure | None:
    """|energy error| per atom against structure size; when sizes take only a few values (a scatter
    would collapse into a few columns) one jittered strip per size with its median."""
    if not preds.splits:
        return None
    from mfhpo.report.figures import log_scale

    sizes = np.unique(np.concatenate([sp.natoms for sp in preds.splits]))
    few = len(sizes) <= 6
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    rng = np.random.default_rng(0)
    errs = []
    n = len(preds.splits)
    for k, sp in enumerate(preds.splits):
        err = np.abs(sp.e_pred - sp.e_ref) / sp.natoms
        errs.append(err)
        if few:
            pos = np.searchsorted(sizes, sp.natoms).astype(float)
            off = (k - (n - 1) / 2) * 0.8 / n
            ax.scatter(pos + off + rng.uniform(-0.3, 0.3, len(pos)) / n, err, s=10, alpha=0.6, label=sp.name)
            for j in range(len(sizes)):
                sel = pos == j
                if sel.any():
                    ax.plot([j + off - 0.35 / n, j + off + 0.35 / n], [np.median(err[sel])] * 2, "k-", lw=2)
        else:
            ax.scatter(sp.natoms, err, s=12, alpha=0.7, label=sp.name)
    if few:
        counts = [int(sum((sp.natoms == v).sum() for sp in preds.splits)) for v in sizes]
        ax.set_xticks(range(len(sizes)), [f"{v}\n({c} structures)" for v, c in zip(sizes, counts)])
        ax.set_xlabel("number of atoms in the structure (only these sizes occur; black bar: median)")
    else:
        ax.set_xlabel("number of atoms in the structure")
    log_scale(ax, np.concatenate(errs))
    ax.set_ylabel("|energy error| per atom [eV/atom]")
    ax.set_title(f"{study.name}: incumbent (trial {preds.trial_id}) energy error vs structure size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
