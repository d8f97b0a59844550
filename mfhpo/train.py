"""Train one SingleNN/BPNN potential on GMP fingerprints under an (epochs, subset) budget.

See docs/training.md for the loss, the scaling, reference energies, warm starts and metrics.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from mfhpo.checkpoint import (LoadedPotential, TrainingState, featurize_options_record, load_checkpoint,
                              save_checkpoint)
from mfhpo.config import Fidelity, TrialConfig
from mfhpo.data import Dataset, Split, fit_reference_energies, nested_subset, split_indices
from mfhpo.device import resolve_device
from mfhpo.errors import MfhpoError
from mfhpo.gmp.featurizer import FeaturizeOptions
from mfhpo.metrics import curve_metrics
from mfhpo.model import FeatureStore, Potential, predict_store
from mfhpo.scoring import score

CURVE_FIELDS = ("epoch", "lr", "train_loss", "val_loss", "val_energy_mae", "val_energy_mae_per_atom",
                "val_force_mae", "val_force_mae_free", "time_s")
SCALE_THRESHOLD = 1e-6


@dataclass
class TrainResult:
    metrics: dict[str, dict[str, float]]
    learning_curve: list[dict[str, float]]
    checkpoint_path: Optional[Path]
    epochs_run: int
    warm_start: dict[str, Any]
    timings: dict[str, float]
    device: str
    n_train: int
    best_epoch: int = 0
    stopped_reason: Optional[str] = None  # None | "early_stopping" | "time_limit"
    out_dir: Optional[Path] = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checkpoint_path"] = None if self.checkpoint_path is None else str(self.checkpoint_path)
        d["out_dir"] = None if self.out_dir is None else str(self.out_dir)
        return d


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _epoch_seed(seed: int, epoch: int) -> int:
    """A seed that depends only on (trial seed, epoch): shuffling and dropout of epoch ``epoch``."""
    h = hashlib.sha256(f"mfhpo-epoch:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def _json_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def split_hash(split: Split, train_idx: np.ndarray) -> str:
    return _json_hash({"split": split.as_dict(), "train": np.asarray(train_idx).tolist()})


def make_split(cfg: TrialConfig, dataset: Dataset) -> Split:
    groups = None
    key = cfg.split.group_key
    if key is not None:
        if dataset.groups is not None:
            groups = dataset.groups
        else:
            missing = [k for k, a in enumerate(dataset.images) if key not in a.info]
            if missing:
                raise MfhpoError(f"{dataset.source}: frame {missing[0]}: info has no group key '{key}' (split.group_key)")
            groups = np.array([str(a.info[key]) for a in dataset.images])
    return split_indices(len(dataset), cfg.split.val_fraction, cfg.split.test_fraction, cfg.split.seed, groups=groups)


def fit_feature_scaler(fp: torch.Tensor, elem: torch.Tensor, n_elements: int, kind: str):
    """Per element and column offset/scale so that ``(fp - offset) * scale`` is in [0, 1]
    (``normalize``) or has zero mean / unit population std (``standardize``), from training atoms.
    Columns whose range (std) is below 1e-6 get scale 1. Elements without training atoms use the
    statistics of all training atoms."""
    nf = fp.shape[1]
    offset = torch.zeros(n_elements, nf, dtype=fp.dtype, device=fp.device)
    scale = torch.ones(n_elements, nf, dtype=fp.dtype, device=fp.device)

    def stats(x):
        if kind == "normalize":
            lo, hi = x.min(0).values, x.max(0).values
            rng = hi - lo
            return lo, torch.where(rng < SCALE_THRESHOLD, torch.ones_like(rng), 1.0 / rng.clamp_min(SCALE_THRESHOLD))
        mu, sd = x.mean(0), x.std(0, unbiased=False)
        return mu, torch.where(sd < SCALE_THRESHOLD, torch.ones_like(sd), 1.0 / sd.clamp_min(SCALE_THRESHOLD))

    g_off, g_scale = stats(fp)
    for e in range(n_elements):
        m = elem == e
        if bool(m.any()):
            offset[e], scale[e] = stats(fp[m])
        else:
            offset[e], scale[e] = g_off, g_scale
    return offset, scale


def _loss_terms(kind: str, e_res: torch.Tensor, f_res: Optional[torch.Tensor]):
    if kind == "mse":
        le = (e_res * e_res).mean() if e_res.numel() else e_res.new_zeros(())
        lf = None if f_res is None else ((f_res * f_res).mean() if f_res.numel() else f_res.new_zeros(()))
    else:
        le = e_res.abs().mean() if e_res.numel() else e_res.new_zeros(())
        lf = None if f_res is None else (f_res.abs().mean() if f_res.numel() else f_res.new_zeros(()))
    return le, lf


class _Logger:
    def __init__(self, path: Path, sink: Optional[Callable[[str], None]]):
        self.fh = open(path, "a")
        self.sink = sink

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}"
        self.fh.write(line + "\n")
        self.fh.flush()
        if self.sink is not None:
            self.sink(msg)

    def close(self) -> None:
        self.fh.close()


def _config_for_compat(cfg_dict: dict) -> dict:
    """The configuration without what a continuation may change (epochs, device), with the defaults of
    fields newer than the checkpoint filled in."""
    d = TrialConfig.model_validate(cfg_dict).model_dump(mode="json")
    d.get("training", {}).pop("epochs", None)
    d.get("training", {}).pop("device", None)
    return d


def warm_start_problem(ck: dict, cfg: TrialConfig, budget: Fidelity, data_hash: str, s_hash: str) -> Optional[str]:
    """Why ``ck`` cannot be continued to ``budget`` (None when it can)."""
    if "resume" not in ck or ck["resume"] is None:
        return "checkpoint has no resumable training state"
    if cfg.training.scheduler == "cosine" and cfg.training.schedule_epochs is None:
        return "cosine schedule depends on the total number of epochs (fidelity.schedule_epochs: top fixes it)"
    if ck.get("data_hash") != data_hash:
        return "different data"
    if _config_for_compat(ck["config"]) != _config_for_compat(cfg.model_dump(mode="json")):
        return "different configuration"
    if int(ck["epochs_run"]) > budget.epochs:
        return f"checkpoint already has {ck['epochs_run']} epochs > budget {budget.epochs}"
    done = Fidelity.model_validate(ck["budget"])
    for e in range(int(ck["epochs_run"])):  # the epochs run so far trained on the subsets this budget trains them on
        if not math.isclose(done.fraction_at(e), budget.fraction_at(e), rel_tol=0, abs_tol=1e-12):
            return f"different subset fraction at epoch {e + 1} ({done.fraction_at(e)} vs {budget.fraction_at(e)})"
    if ck.get("split_hash") != s_hash:
        return "different split"
    if ck["resume"].get("stopped_reason") == "time_limit":
        return None  # resumable: state is at an epoch boundary
    return None


# --------------------------------------------------------------------------------------------
# train: the steps
# --------------------------------------------------------------------------------------------


@dataclass
class _Context:
    """What every step of one training reads: the trial, its data and budget, where it runs, its log."""

    cfg: TrialConfig
    dataset: Dataset
    budget: Fidelity
    device: torch.device
    dtype: torch.dtype
    log: _Logger
    t_start: float
    featurize: FeaturizeOptions


@dataclass
class SplitPlan:
    """The structures of one training: the split, the budget's nested training subset, the validation
    structures, the test structures (empty unless scored), the hash of the split and of the subset
    the first epoch trains on, and the phases of a growing subset: (first epoch, positions in
    ``train`` of the structures it trains on; None: all of them)."""

    split: Split
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    hash: str
    phases: list[tuple[int, Optional[np.ndarray]]]

    def active(self, epoch: int) -> Optional[np.ndarray]:
        """Positions in ``train`` that epoch ``epoch`` trains on (None: all)."""
        return [p for e, p in self.phases if e <= epoch][-1]


@dataclass
class FeatureStores:
    """The GMP setting and the device-resident fingerprints of the training, validation and test structures."""

    setting: Any
    train: FeatureStore
    val: FeatureStore
    test: Optional[FeatureStore]
    featurize_s: float

    def all(self) -> list[FeatureStore]:
        return [s for s in (self.train, self.val, self.test) if s is not None]


@dataclass
class Continuation:
    """A checkpoint this training continues (warm start): its training state and reference energies."""

    state: TrainingState
    reference_energies: dict[str, float]


@dataclass(frozen=True)
class Loss:
    """The training objective: mean squared (``mse``) or absolute (``mae``) residuals of the energy in
    sigma units (per atom with ``energy_per_atom``) plus ``force_coefficient`` times those of the forces
    (free atoms, divided by ``force_norm``) when forces are trained."""

    kind: str
    energy_per_atom: bool
    force_coefficient: float
    train_forces: bool
    force_norm: float

    def __call__(self, e_res: torch.Tensor, f_res: Optional[torch.Tensor]) -> torch.Tensor:
        le, lf = _loss_terms(self.kind, e_res, f_res)
        return le if lf is None else le + self.force_coefficient * lf


def check_inputs(cfg: TrialConfig, dataset: Dataset) -> None:
    """One-line errors for data a training cannot use (before any work)."""
    fc = float(cfg.training.force_coefficient)
    if len(dataset) == 0:
        raise MfhpoError(f"{dataset.source}: dataset is empty")
    if fc > 0 and not dataset.has_forces:
        raise MfhpoError(f"{dataset.source}: training.force_coefficient = {fc} needs forces, but the data has no forces")


def plan_split(cfg: TrialConfig, dataset: Dataset, budget: Fidelity, split: Optional[Split] = None,
               eval_test: bool = False) -> SplitPlan:
    """Split 1: the configured split (or ``split``) and the budget's nested subset of its training part."""
    src = dataset.source
    if split is None:
        split = make_split(cfg, dataset)
    if len(split.train) == 0:
        raise MfhpoError(f"{src}: empty training split")
    train_idx = nested_subset(split.train, budget.subset_fraction, seed=cfg.split.seed)
    if len(train_idx) == 0:
        raise MfhpoError(f"{src}: empty training subset (subset_fraction={budget.subset_fraction})")
    val_idx = np.asarray(split.val, dtype=np.int64)
    test_idx = np.asarray(split.test, dtype=np.int64) if eval_test else np.zeros(0, np.int64)
    phases: list[tuple[int, Optional[np.ndarray]]] = []
    first = train_idx
    for e0, _, frac in budget.phases():
        idx = nested_subset(split.train, frac, seed=cfg.split.seed)  # nested: a subset of train_idx
        first = idx if e0 == 0 else first
        phases.append((e0, None if len(idx) == len(train_idx) else np.searchsorted(train_idx, idx)))
    return SplitPlan(split, train_idx, val_idx, test_idx, split_hash(split, first), phases)


def _seed(seed: int, device: torch.device) -> None:
    """Initial weights depend on the trial seed only; deterministic cuDNN on CUDA."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def decide_warm_start(ctx: _Context, init_checkpoint: Optional[Path], data_hash: str,
                      s_hash: str) -> tuple[dict[str, Any], Optional[Continuation]]:
    """Warm start: the ``TrainResult.warm_start`` record and the continuation (None: train from scratch)."""
    warm = {"used": False, "from": None if init_checkpoint is None else str(init_checkpoint), "reason": None}
    if init_checkpoint is None:
        return warm, None
    try:
        ck = load_checkpoint(init_checkpoint, map_location="cpu")
        reason = warm_start_problem(ck, ctx.cfg, ctx.budget, data_hash, s_hash)
    except MfhpoError as exc:
        reason = str(exc)
    if reason is not None:
        warm["reason"] = reason
        ctx.log(f"warm start from {init_checkpoint} not possible ({reason}); training from scratch")
        return warm, None
    state = TrainingState.from_checkpoint(ck)
    warm["used"] = True
    warm["from_epoch"] = state.epochs_run
    ctx.log(f"warm start from {init_checkpoint} at epoch {state.epochs_run}")
    return warm, Continuation(state, dict(ck["reference_energies"]))


def build_feature_stores(ctx: _Context, plan: SplitPlan, cache=None, progress: bool = False,
                         base_dir: Optional[Path] = None) -> FeatureStores:
    """Feature stores: fingerprints (with derivatives when the data have forces) of every structure the
    training uses, featurized once, and one device-resident store per split."""
    from mfhpo.gmp.featurizer import featurize_many
    from mfhpo.gmp.setting import GMPSetting

    ds, dev, dtype = ctx.dataset, ctx.device, ctx.dtype
    t_feat = time.perf_counter()
    setting = GMPSetting.from_descriptor(ctx.cfg.descriptor, ds.elements, base_dir=base_dir)
    derivatives = ds.has_forces
    use_idx = np.unique(np.concatenate([plan.train, plan.val, plan.test]))
    pos = {int(i): k for k, i in enumerate(use_idx)}
    ctx.log(f"featurizing {len(use_idx)} structures (nfeat={setting.nfeat}, derivatives={derivatives}) on {dev}")
    feats = featurize_many([ds.images[i] for i in use_idx], setting, derivatives=derivatives, dtype=dtype,
                           device=dev, cache=cache, progress=progress, options=ctx.featurize)
    featurize_s = time.perf_counter() - t_feat
    col = {e: k for k, e in enumerate(ds.elements)}
    elem = {int(i): torch.tensor([col[s] for s in ds.images[i].get_chemical_symbols()], dtype=torch.long)
            for i in use_idx}

    def store(idx: np.ndarray) -> FeatureStore:
        return FeatureStore(
            [feats[pos[int(i)]] for i in idx], [elem[int(i)] for i in idx], device=dev, dtype=dtype,
            derivatives=derivatives, energies=ds.energies[idx],
            forces=None if ds.forces is None else [ds.forces[i] for i in idx],
            free=[ds.free[i] for i in idx], nfeat=setting.nfeat)

    test = store(plan.test) if len(plan.test) else None
    return FeatureStores(setting, store(plan.train), store(plan.val), test, featurize_s)


def fit_scalers_and_references(ctx: _Context, pot: Potential, tr: FeatureStore, plan: SplitPlan) -> dict:
    """Feature scalers, per-element reference energies (linear fit) and the energy scale sigma (std of
    the per-atom residual energies) from the training subset (of a growing subset: the first phase's,
    which every budget shares), written into ``pot``; the references."""
    tc, ds, dev, dtype = ctx.cfg.training, ctx.dataset, ctx.device, ctx.dtype
    elements = ds.elements
    first = plan.phases[0][1]
    fp, elem, energy, natoms, train_idx = tr.fp, tr.elem, tr.energy, tr.natoms, plan.train
    if first is not None:
        sids = torch.as_tensor(first, device=dev)
        rows = tr.atom_rows(sids)
        fp, elem, energy, natoms, train_idx = fp[rows], elem[rows], energy[sids], natoms[sids], train_idx[first]
    n = int(natoms.numel())
    scale_elem = elem if tc.scale_per_element else torch.zeros_like(elem)
    off, sc = fit_feature_scaler(fp, scale_elem, len(elements), tc.feature_scaling)
    refs = fit_reference_energies([ds.images[i] for i in train_idx], ds.energies[train_idx], elements)
    ref_vec = torch.tensor([refs[e] for e in elements], dtype=dtype, device=dev)
    nat = natoms.to(dtype)
    seg = torch.repeat_interleave(torch.arange(n, device=dev), natoms)
    eref = torch.zeros(n, dtype=dtype, device=dev).index_add(0, seg, ref_vec[elem])
    resid = (energy - eref) / nat
    sigma = float(resid.std(unbiased=False)) if n > 1 else 0.0
    if not math.isfinite(sigma) or sigma < 1e-6:
        sigma = 1.0
    with torch.no_grad():
        pot.feat_offset.copy_(off)
        pot.feat_scale.copy_(sc)
        pot.ref_energy.copy_(ref_vec)
        pot.sigma.fill_(sigma)
    return refs


def initial_potential(ctx: _Context, stores: FeatureStores, plan: SplitPlan,
                      cont: Optional[Continuation]) -> tuple[Potential, dict[str, float]]:
    """Initial potential: fresh weights (trial seed) with scalers, references and sigma fitted on the
    training subset, or the continued checkpoint's last weights; the stores are then scaled once and
    get their scaled targets. Returns the potential and its reference energies."""
    elements = ctx.dataset.elements
    pot = Potential(stores.setting.nfeat, elements, ctx.cfg.model).to(device=ctx.device, dtype=ctx.dtype)
    if cont is not None:
        pot.load_state_dict(cont.state.model_state)
        refs = dict(cont.reference_energies)
    else:
        refs = fit_scalers_and_references(ctx, pot, stores.train, plan)
    for s in stores.all():
        s.apply_scaling(pot)
        s.set_targets(pot)
    return pot, refs


def make_loss(cfg: TrialConfig, tr: FeatureStore, pot: Potential, plan: Optional[SplitPlan] = None) -> Loss:
    """The loss of this training. Force residuals are divided by the training forces' std (in scaled
    units; of a growing subset: its first phase's) so that the force term is O(1) like the per-atom
    energy term and force_coefficient means the same on every dataset (aspirin: sigma ~ 0.01 eV/atom
    but |F| ~ 1 eV/Å; OC20: the other way round)."""
    tc = cfg.training
    fc = float(tc.force_coefficient)
    force_norm = 1.0
    forces, free = tr.forces, tr.free
    first = None if plan is None else plan.phases[0][1]
    if forces is not None and first is not None:
        rows = tr.atom_rows(torch.as_tensor(first, device=tr.device))
        forces, free = forces[rows], free[rows]
    if forces is not None and bool(free.any()):
        fstd = float(forces[free].std(unbiased=False)) / float(pot.sigma)
        if math.isfinite(fstd) and fstd > 1e-12:
            force_norm = fstd
    return Loss(tc.loss, tc.energy_per_atom, fc, fc > 0 and tr.forces is not None, force_norm)


def make_optimizer(cfg: TrialConfig, pot: Potential, epochs: int):
    """Adam/AdamW over the network's parameters and the configured learning-rate scheduler (or None)."""
    tc = cfg.training
    opt_cls = torch.optim.Adam if tc.optimizer == "adam" else torch.optim.AdamW
    opt = opt_cls(list(pot.net.parameters()), lr=tc.lr, weight_decay=tc.weight_decay)
    if tc.scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=tc.step_size, gamma=tc.gamma)
    elif tc.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tc.schedule_epochs or epochs)
    elif tc.scheduler == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=tc.gamma, patience=tc.plateau_patience)
    else:
        sched = None
    return opt, sched


def _starting_state(opt, sched, cont: Optional[Continuation], device: torch.device) -> TrainingState:
    """A fresh state, or the continued one with its optimizer and scheduler state loaded (an early-stopped
    run stays stopped; one stopped by its time limit goes on)."""
    if cont is None:
        return TrainingState()
    r = cont.state
    opt.load_state_dict(r.optimizer)
    if sched is not None and r.scheduler is not None:
        sched.load_state_dict(r.scheduler)
    return TrainingState(epochs_run=r.epochs_run, best_loss=r.best_loss, best_epoch=r.best_epoch,
                         bad_epochs=r.bad_epochs, best_state={k: v.to(device) for k, v in r.best_state.items()},
                         learning_curve=[dict(c) for c in r.learning_curve],
                         stopped_reason="early_stopping" if r.stopped_reason == "early_stopping" else None)


def _train_epoch(ctx: _Context, pot: Potential, tr: FeatureStore, loss: Loss, opt, epoch: int,
                 active: Optional[np.ndarray] = None) -> float:
    """One pass over the training subset (``active``: those positions of it) in an order (and with
    dropout) seeded by (trial seed, epoch)."""
    tc = ctx.cfg.training
    es = _epoch_seed(ctx.cfg.seed, epoch)
    torch.manual_seed(es)  # dropout of this epoch
    n = tr.n if active is None else len(active)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(es))
    if active is not None:
        perm = torch.as_tensor(active, dtype=torch.long)[perm]
    perm = perm.to(ctx.device)
    pot.train()
    params = list(pot.net.parameters())
    total = torch.zeros((), dtype=ctx.dtype, device=ctx.device)
    for s in range(0, n, tc.batch_size):
        sids = perm[s:s + tc.batch_size]
        batch, aidx = tr.batch(sids, derivatives=loss.train_forces)
        opt.zero_grad(set_to_none=True)
        e, f = pot.scaled_energy_forces(batch, forces=loss.train_forces, create_graph=True)
        e_res = e - tr.e_scaled[sids]
        if loss.energy_per_atom:
            e_res = e_res / batch.natoms.to(ctx.dtype)
        f_res = None
        if loss.train_forces:
            f_res = (f - tr.f_scaled[aidx])[tr.free[aidx]] / loss.force_norm
        value = loss(e_res, f_res)
        value.backward()
        if tc.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        opt.step()
        total = total + value.detach() * sids.numel()
    return float(total) / n


def _validation_pass(pot: Potential, va: FeatureStore, loss: Loss, batch_size: int, forces: bool):
    """(validation loss, the learning curve's validation MAEs) with the current weights."""
    e, f = predict_store(pot, va, forces=forces, batch_size=max(batch_size, 64))
    e_res = (e - va.energy) / pot.sigma
    if loss.energy_per_atom:
        e_res = e_res / va.natoms.to(e_res.dtype)
    f_res = None
    if loss.train_forces and f is not None:
        f_res = ((f - va.forces) / (pot.sigma * loss.force_norm))[va.free]
    return float(loss(e_res, f_res)), curve_metrics(e, va.energy, va.natoms, f, va.forces, va.free)


def _step_scheduler(sched, kind: str, val_loss: float) -> None:
    """The end-of-epoch scheduler step (plateau: on the validation loss)."""
    if sched is None:
        return
    if kind == "plateau":
        sched.step(val_loss)
    else:
        sched.step()


def _record_epoch(state: TrainingState, pot: Potential, row: dict[str, float]) -> None:
    """Count the finished epoch, keep the best weights (lowest validation loss), append the curve row."""
    state.epochs_run = int(row["epoch"])
    if row["val_loss"] < state.best_loss:
        state.best_loss, state.best_epoch, state.bad_epochs = row["val_loss"], state.epochs_run, 0
        state.best_state = {k: v.detach().clone() for k, v in pot.state_dict().items()}
    else:
        state.bad_epochs += 1
    state.learning_curve.append(row)


def _stop_reason(ctx: _Context, state: TrainingState, time_limit_s: Optional[float]) -> Optional[str]:
    """Early stopping (patience) or the time limit after this epoch, logged; None to go on."""
    patience = ctx.cfg.training.early_stopping_patience
    if patience is not None and state.bad_epochs >= patience:
        ctx.log(f"early stopping at epoch {state.epochs_run} (best epoch {state.best_epoch})")
        return "early_stopping"
    if time_limit_s is not None and time.perf_counter() - ctx.t_start > time_limit_s:
        ctx.log(f"time limit {time_limit_s:.0f} s reached at epoch {state.epochs_run}")
        return "time_limit"
    return None


class _EpochBar:
    """A transient rich progress bar over the epochs (nothing when disabled)."""

    def __init__(self, enabled: bool, total: int, completed: int):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True)
            self.task = self.bar.add_task("train", total=total, completed=completed, info="")

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def update(self, row: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=row["epoch"], info=f"loss {row['train_loss']:.3g} val E "
                            f"{row['val_energy_mae']:.3g} eV F {row['val_force_mae_free']:.3g}")


def fit(ctx: _Context, pot: Potential, stores: FeatureStores, loss: Loss, cont: Optional[Continuation] = None,
        time_limit_s: Optional[float] = None, progress: bool = False,
        plan: Optional[SplitPlan] = None) -> tuple[TrainingState, float]:
    """Fit: epochs up to the budget (from the continued state's epoch; each on its phase's part of the
    training subset when ``plan`` has a growing one), each followed by a validation pass, the scheduler
    step, best-weight bookkeeping, early stopping and the time limit. Leaves the best weights in
    ``pot``; returns the final training state and the seconds it took."""
    tc, budget, va = ctx.cfg.training, ctx.budget, stores.val
    opt, sched = make_optimizer(ctx.cfg, pot, budget.epochs)
    state = _starting_state(opt, sched, cont, ctx.device)
    no_val = {k: math.nan for k in CURVE_FIELDS if k.startswith("val_") and k != "val_loss"}
    t_train = time.perf_counter()
    with _EpochBar(progress, budget.epochs, state.epochs_run) as bar:
        while state.epochs_run < budget.epochs and state.stopped_reason is None:
            epoch = state.epochs_run
            train_loss = _train_epoch(ctx, pot, stores.train, loss, opt, epoch,
                                      None if plan is None else plan.active(epoch))
            lr = float(opt.param_groups[0]["lr"])
            val_loss, vm = (_validation_pass(pot, va, loss, tc.batch_size, ctx.dataset.has_forces) if va.n > 0
                            else (train_loss, no_val))
            if not math.isfinite(val_loss) or not math.isfinite(train_loss):
                raise MfhpoError(f"training diverged at epoch {epoch + 1} (loss is NaN/inf; lower training.lr)")
            _step_scheduler(sched, tc.scheduler, val_loss)
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "val_loss": val_loss, **vm}
            _record_epoch(state, pot, row)
            row["time_s"] = time.perf_counter() - t_train
            bar.update(row)
            if state.epochs_run % max(1, budget.epochs // 20) == 0 or state.epochs_run == budget.epochs:
                ctx.log(f"epoch {state.epochs_run}: lr {lr:.3g} train_loss {train_loss:.4g} val_loss {val_loss:.4g} "
                        f"val_E_mae {vm['val_energy_mae']:.4g} eV val_F_mae_free {vm['val_force_mae_free']:.4g} eV/A")
            state.stopped_reason = _stop_reason(ctx, state, time_limit_s)
    train_s = time.perf_counter() - t_train
    state.model_state = {k: v.detach().clone() for k, v in pot.state_dict().items()}
    state.optimizer = opt.state_dict()
    state.scheduler = None if sched is None else sched.state_dict()
    if state.best_state is None:
        state.best_state = state.model_state
    pot.load_state_dict(state.best_state)
    return state, train_s


def evaluate_splits(ctx: _Context, trained: LoadedPotential, stores: FeatureStores,
                    plan: SplitPlan) -> dict[str, dict[str, float]]:
    """Evaluate: the metrics records (with baselines) of the best weights on train, validation and,
    when scored, test, from the training's own feature stores."""
    bs = max(ctx.cfg.training.batch_size, 64)
    metrics: dict[str, dict[str, float]] = {}
    for name, st, idx in (("train", stores.train, plan.train), ("val", stores.val, plan.val),
                          ("test", stores.test, plan.test)):
        if st is not None:
            metrics[name] = score(trained, ctx.dataset, indices=idx, features=st, batch_size=bs).to_dict()
    return metrics


def save_training(ctx: _Context, out_dir: Path, trained: LoadedPotential, state: TrainingState, plan: SplitPlan,
                  metrics: dict, data_hash: str, base_dir: Optional[Path]) -> Path:
    """Save: ``checkpoint.pt`` (best weights, training state, featurize options, provenance),
    ``metrics.json`` and ``learning_curve.csv``; returns the checkpoint's path."""
    ck_path = out_dir / "checkpoint.pt"
    setting, budget = trained.setting, ctx.budget
    save_checkpoint(ck_path, {
        "config": ctx.cfg.model_dump(mode="json"), "setting": setting.to_dict(),
        "base_dir": None if base_dir is None else str(base_dir), "elements": list(ctx.dataset.elements),
        "n_feat": int(setting.nfeat), "model_state": {k: v.detach().cpu() for k, v in state.best_state.items()},
        "reference_energies": {k: float(v) for k, v in trained.reference_energies.items()},
        "sigma": float(trained.potential.sigma), "resume": state.to_record(),
        **featurize_options_record(ctx.featurize, ctx.device),
        "data_hash": data_hash, "split_hash": plan.hash,
        "budget": budget.model_dump(mode="json", exclude_none=True),
        "epochs_run": int(state.epochs_run), "best_epoch": int(state.best_epoch), "n_train": int(len(plan.train)),
        "metrics": metrics,
    })
    (out_dir / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2))
    with open(out_dir / "learning_curve.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CURVE_FIELDS))
        w.writeheader()
        for row in state.learning_curve:
            w.writerow({k: row.get(k) for k in CURVE_FIELDS})
    return ck_path


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


def train(
    cfg: TrialConfig,
    dataset: Dataset,
    budget: Optional[Fidelity],
    out_dir: Path,
    *,
    split: Optional[Split] = None,
    init_checkpoint: Optional[Path] = None,
    cache=None,
    device: Optional[str] = None,
    progress: bool = True,
    time_limit_s: Optional[float] = None,
    eval_test: bool = False,
    log: Optional[Callable[[str], None]] = None,
    base_dir: Optional[Path] = None,
    featurize: Optional[FeaturizeOptions] = None,
) -> TrainResult:
    """Train ``cfg`` on ``dataset`` for ``budget`` (epochs, nested subset fraction); see module doc.

    Steps: split (:func:`plan_split`) -> feature stores (:func:`build_feature_stores`) -> initial
    potential (:func:`initial_potential`; or the continued ``init_checkpoint``, :func:`decide_warm_start`)
    -> fit (:func:`fit`) -> evaluate (:func:`evaluate_splits`) -> save (:func:`save_training`).
    Writes ``metrics.json``, ``learning_curve.csv``, ``checkpoint.pt`` and ``train.log`` into
    ``out_dir``. ``base_dir`` resolves a relative ``descriptor.densities`` directory; ``featurize``
    (:class:`~mfhpo.gmp.featurizer.FeaturizeOptions`) chunks the featurization and is recorded in the checkpoint.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    budget = budget or Fidelity(epochs=cfg.training.epochs)
    dev = resolve_device(device or cfg.training.device)
    dtype = torch.float64 if cfg.training.dtype == "float64" else torch.float32
    logger = _Logger(out_dir / "train.log", log)
    ctx = _Context(cfg, dataset, budget, dev, dtype, logger, t_start, featurize or FeaturizeOptions())
    try:
        return _train(ctx, out_dir, split, init_checkpoint, cache, progress, time_limit_s, eval_test, base_dir)
    finally:
        logger.close()


class _Laps:
    """``lap(name)`` records the seconds since the previous lap (or since creation) under ``name``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, name: str) -> None:
        t = time.perf_counter()
        self.seconds[name] = t - self._t
        self._t = t


def _train(ctx: _Context, out_dir: Path, split: Optional[Split], init_checkpoint: Optional[Path], cache,
           progress: bool, time_limit_s: Optional[float], eval_test: bool, base_dir: Optional[Path]) -> TrainResult:
    """The steps of :func:`train` in order."""
    cfg, dataset = ctx.cfg, ctx.dataset
    lap = _Laps()  # seconds per step: what a trial costs besides its epochs (docs/training.md)
    check_inputs(cfg, dataset)
    plan = plan_split(cfg, dataset, ctx.budget, split, eval_test)
    data_hash = dataset.hash()
    _seed(cfg.seed, ctx.device)
    warm, cont = decide_warm_start(ctx, init_checkpoint, data_hash, plan.hash)
    lap("split_s")
    stores = build_feature_stores(ctx, plan, cache, progress, base_dir)
    lap("featurize_s")
    pot, refs = initial_potential(ctx, stores, plan, cont)
    loss = make_loss(cfg, stores.train, pot, plan)
    tr, va, te = stores.train, stores.val, stores.test
    ctx.log(f"train {tr.n} structures ({tr.n_atoms} atoms), val {va.n}, test {0 if te is None else te.n}; "
            f"sigma={float(pot.sigma):.4g} eV/atom; force_coefficient={loss.force_coefficient}")
    lap("setup_s")
    state, train_s = fit(ctx, pot, stores, loss, cont, time_limit_s, progress, plan)
    del cont
    lap("fit_s")
    trained = LoadedPotential(pot, stores.setting, cfg, refs, ctx.dtype, ctx.device, featurize_options=ctx.featurize)
    metrics = evaluate_splits(ctx, trained, stores, plan)
    lap("evaluate_s")
    ck_path = save_training(ctx, out_dir, trained, state, plan, metrics, data_hash, base_dir)
    lap("save_s")
    total_s = time.perf_counter() - ctx.t_start
    v = metrics.get("val", {})
    ctx.log(f"done: {state.epochs_run} epochs (best {state.best_epoch}) in {total_s:.1f} s; val energy MAE "
            f"{v.get('energy_mae', math.nan):.4g} eV (baseline {v.get('baseline_energy_mae', math.nan):.4g}), "
            f"force MAE free {v.get('force_mae_free', math.nan):.4g} eV/A")
    return TrainResult(
        metrics=metrics, learning_curve=state.learning_curve, checkpoint_path=ck_path, epochs_run=state.epochs_run,
        warm_start=warm, timings={**lap.seconds, "featurize_s": stores.featurize_s, "train_s": train_s,
                                  "total_s": total_s},
        device=str(ctx.device), n_train=tr.n, best_epoch=state.best_epoch, stopped_reason=state.stopped_reason,
        out_dir=out_dir)


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------------------------
# command
# --------------------------------------------------------------------------------------------


def train_command(config: Path, data: Path, out: Path, *, epochs: Optional[int] = None, subset: float = 1.0,
                  device: Optional[str] = None, init_checkpoint: Optional[Path] = None,
                  featurize: Optional[FeaturizeOptions] = None, subset_schedule: Optional[str] = None) -> TrainResult:
    """``mfhpo train``: load config + data, train, print val metrics next to the baselines.
    ``subset_schedule``: "EPOCH:FRACTION,..." (a growing subset, :class:`~mfhpo.config.Fidelity`)."""
    from rich.console import Console
    from rich.table import Table

    from mfhpo.config import load_trial_config
    from mfhpo.data import load_dataset

    cfg = load_trial_config(config)
    try:
        schedule = None if subset_schedule is None else [
            (int(e), float(f)) for e, f in (part.split(":") for part in subset_schedule.split(","))]
        budget = Fidelity(epochs=epochs if epochs is not None else cfg.training.epochs, subset_fraction=subset,
                          subset_schedule=schedule)
    except Exception:
        raise MfhpoError(f"--epochs must be >= 1, --subset in (0, 1] and --subset-schedule EPOCH:FRACTION,... "
                         f"from epoch 0, increasing, ending at --subset (got {epochs}, {subset}, "
                         f"{subset_schedule})") from None
    console = Console(stderr=True)
    ds = load_dataset(data, group_key=cfg.split.group_key)
    # a held-out test split (split.test_fraction > 0) is scored once at the end, never used for selection
    result = train(cfg, ds, budget, Path(out), init_checkpoint=init_checkpoint, device=device, progress=True,
                   log=lambda m: console.print(m, highlight=False), base_dir=Path(config).resolve().parent,
                   eval_test=cfg.split.test_fraction > 0, featurize=featurize)
    table = Table(title=f"{Path(data).name}: best epoch {result.best_epoch}/{result.epochs_run}")
    table.add_column("split")
    for c in ("energy MAE [eV]", "baseline", "E MAE/atom [eV]", "baseline", "F MAE free [eV/Å]", "zero-F", "F MAE all", "zero-F"):
        table.add_column(c, justify="right")
    for name, m in result.metrics.items():
        f = lambda k: "-" if m.get(k) is None or not math.isfinite(m.get(k)) else f"{m[k]:.4g}"  # noqa: E731
        table.add_row(name, f("energy_mae"), f("baseline_energy_mae"), f("energy_mae_per_atom"),
                      f("baseline_energy_mae_per_atom"), f("force_mae_free"), f("baseline_force_mae_free"),
                      f("force_mae"), f("baseline_force_mae"))
    Console().print(table)
    print(f"wrote {Path(out) / 'metrics.json'} and {result.checkpoint_path}")
    return result
