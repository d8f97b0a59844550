"""Train one SingleNN/BPNN potential on GMP fingerprints under an (epochs, subset) budget.

See docs/training.md for the loss, the scaling, reference energies, warm starts and metrics.
"""

from __future__ import annotations

import copy
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

from mfhpo.checkpoint import load_checkpoint, predict_store, resolve_device, save_checkpoint
from mfhpo.config import Budget, TrialConfig
from mfhpo.data import Dataset, Split, fit_reference_energies, nested_subset, split_indices
from mfhpo.errors import MfhpoError
from mfhpo.metrics import dataset_metrics
from mfhpo.model import FeatureStore, Potential

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
    d = copy.deepcopy(cfg_dict)
    d.get("training", {}).pop("epochs", None)
    d.get("training", {}).pop("device", None)
    return d


def warm_start_problem(ck: dict, cfg: TrialConfig, budget: Budget, data_hash: str, s_hash: str) -> Optional[str]:
    """Why ``ck`` cannot be continued to ``budget`` (None when it can)."""
    if "resume" not in ck or ck["resume"] is None:
        return "checkpoint has no resumable training state"
    if cfg.training.scheduler == "cosine":
        return "cosine schedule depends on the total number of epochs"
    if ck.get("data_hash") != data_hash:
        return "different data"
    if _config_for_compat(ck["config"]) != _config_for_compat(cfg.model_dump(mode="json")):
        return "different configuration"
    if not math.isclose(float(ck["budget"]["subset_fraction"]), float(budget.subset_fraction), rel_tol=0, abs_tol=1e-12):
        return f"different subset fraction ({ck['budget']['subset_fraction']} vs {budget.subset_fraction})"
    if ck.get("split_hash") != s_hash:
        return "different split"
    if int(ck["epochs_run"]) > budget.epochs:
        return f"checkpoint already has {ck['epochs_run']} epochs > budget {budget.epochs}"
    if ck["resume"].get("stopped_reason") == "time_limit":
        return None  # resumable: state is at an epoch boundary
    return None


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


def train(
    cfg: TrialConfig,
    dataset: Dataset,
    budget: Optional[Budget],
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
) -> TrainResult:
    """Train ``cfg`` on ``dataset`` for ``budget`` (epochs, nested subset fraction); see module doc.

    Writes ``metrics.json``, ``learning_curve.csv``, ``checkpoint.pt`` and ``train.log`` into
    ``out_dir``. ``base_dir`` resolves a relative ``descriptor.densities`` directory.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    budget = budget or Budget(epochs=cfg.training.epochs)
    tc = cfg.training
    fc = float(tc.force_coefficient)
    dev = resolve_device(device or tc.device)
    dtype = torch.float64 if tc.dtype == "float64" else torch.float32
    logger = _Logger(out_dir / "train.log", log)
    try:
        return _train(cfg, dataset, budget, out_dir, split, init_checkpoint, cache, dev, dtype, fc, progress,
                      time_limit_s, eval_test, logger, base_dir, t_start)
    finally:
        logger.close()


def _train(cfg, dataset, budget, out_dir, split, init_checkpoint, cache, dev, dtype, fc, progress,
           time_limit_s, eval_test, logger, base_dir, t_start) -> TrainResult:
    from mfhpo.gmp.featurizer import featurize_many
    from mfhpo.gmp.setting import GMPSetting

    tc = cfg.training
    src = dataset.source
    if len(dataset) == 0:
        raise MfhpoError(f"{src}: dataset is empty")
    if fc > 0 and not dataset.has_forces:
        raise MfhpoError(f"{src}: training.force_coefficient = {fc} needs forces, but the data has no forces")
    if split is None:
        split = make_split(cfg, dataset)
    if len(split.train) == 0:
        raise MfhpoError(f"{src}: empty training split")
    train_idx = nested_subset(split.train, budget.subset_fraction, seed=cfg.split.seed)
    if len(train_idx) == 0:
        raise MfhpoError(f"{src}: empty training subset (subset_fraction={budget.subset_fraction})")
    val_idx = np.asarray(split.val, dtype=np.int64)
    test_idx = np.asarray(split.test, dtype=np.int64) if eval_test else np.zeros(0, np.int64)
    data_hash = dataset.hash()
    s_hash = split_hash(split, train_idx)
    elements = dataset.elements
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2**32))
    if dev.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False

    # ---------------- warm start decision ----------------
    warm = {"used": False, "from": None if init_checkpoint is None else str(init_checkpoint), "reason": None}
    ck = None
    if init_checkpoint is not None:
        try:
            ck = load_checkpoint(init_checkpoint, map_location="cpu")
            reason = warm_start_problem(ck, cfg, budget, data_hash, s_hash)
        except MfhpoError as exc:
            reason = str(exc)
        if reason is None:
            warm["used"] = True
            warm["from_epoch"] = int(ck["epochs_run"])
            logger(f"warm start from {init_checkpoint} at epoch {ck['epochs_run']}")
        else:
            warm["reason"] = reason
            ck = None
            logger(f"warm start from {init_checkpoint} not possible ({reason}); training from scratch")

    # ---------------- features ----------------
    t_feat = time.perf_counter()
    setting = GMPSetting.from_descriptor(cfg.descriptor, elements, base_dir=base_dir)
    derivatives = dataset.has_forces
    use_idx = np.unique(np.concatenate([train_idx, val_idx, test_idx]))
    pos = {int(i): k for k, i in enumerate(use_idx)}
    logger(f"featurizing {len(use_idx)} structures (nfeat={setting.nfeat}, derivatives={derivatives}) on {dev}")
    feats = featurize_many([dataset.images[i] for i in use_idx], setting, derivatives=derivatives, dtype=dtype,
                           device=dev, cache=cache, progress=progress)
    featurize_s = time.perf_counter() - t_feat
    col = {e: k for k, e in enumerate(elements)}
    elem_all = {int(i): torch.tensor([col[s] for s in dataset.images[i].get_chemical_symbols()], dtype=torch.long)
                for i in use_idx}

    def store(idx: np.ndarray) -> FeatureStore:
        return FeatureStore(
            [feats[pos[int(i)]] for i in idx], [elem_all[int(i)] for i in idx], device=dev, dtype=dtype,
            derivatives=derivatives, energies=dataset.energies[idx],
            forces=None if dataset.forces is None else [dataset.forces[i] for i in idx],
            free=[dataset.free[i] for i in idx], nfeat=setting.nfeat)

    tr, va = store(train_idx), store(val_idx)
    te = store(test_idx) if eval_test and len(test_idx) else None
    del feats

    # ---------------- potential: scalers, references, sigma ----------------
    pot = Potential(setting.nfeat, elements, cfg.model).to(device=dev, dtype=dtype)
    if ck is not None:
        pot.load_state_dict(ck["resume"]["model_state"])
        refs = dict(ck["reference_energies"])
    else:
        scale_elem = tr.elem if tc.scale_per_element else torch.zeros_like(tr.elem)
        off, sc = fit_feature_scaler(tr.fp, scale_elem, len(elements), tc.feature_scaling)
        train_images = [dataset.images[i] for i in train_idx]
        refs = fit_reference_energies(train_images, dataset.energies[train_idx], elements)
        ref_vec = torch.tensor([refs[e] for e in elements], dtype=dtype, device=dev)
        nat = tr.natoms.to(dtype)
        seg = torch.repeat_interleave(torch.arange(tr.n, device=dev), tr.natoms)
        eref = torch.zeros(tr.n, dtype=dtype, device=dev).index_add(0, seg, ref_vec[tr.elem])
        resid = (tr.energy - eref) / nat
        sigma = float(resid.std(unbiased=False)) if tr.n > 1 else 0.0
        if not math.isfinite(sigma) or sigma < 1e-6:
            sigma = 1.0
        with torch.no_grad():
            pot.feat_offset.copy_(off)
            pot.feat_scale.copy_(sc)
            pot.ref_energy.copy_(ref_vec)
            pot.sigma.fill_(sigma)
    for s in (tr, va, te):
        if s is not None:
            s.apply_scaling(pot)
            s.set_targets(pot)
    sigma = float(pot.sigma)
    # Force residuals are divided by the training forces' std (in scaled units) so that the force
    # term is O(1) like the per-atom energy term and force_coefficient means the same on every
    # dataset (aspirin: sigma ~ 0.01 eV/atom but |F| ~ 1 eV/Å; OC20: the other way round).
    force_norm = 1.0
    if tr.forces is not None and bool(tr.free.any()):
        fstd = float(tr.forces[tr.free].std(unbiased=False)) / sigma
        if math.isfinite(fstd) and fstd > 1e-12:
            force_norm = fstd
    logger(f"train {tr.n} structures ({tr.n_atoms} atoms), val {va.n}, test {0 if te is None else te.n}; "
           f"sigma={sigma:.4g} eV/atom; force_coefficient={fc}")

    # ---------------- optimiser / scheduler ----------------
    params = list(pot.net.parameters())
    opt_cls = torch.optim.Adam if tc.optimizer == "adam" else torch.optim.AdamW
    opt = opt_cls(params, lr=tc.lr, weight_decay=tc.weight_decay)
    if tc.scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=tc.step_size, gamma=tc.gamma)
    elif tc.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=budget.epochs)
    elif tc.scheduler == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=tc.gamma, patience=tc.plateau_patience)
    else:
        sched = None

    start_epoch = 0
    best_loss, best_epoch, bad_epochs = math.inf, 0, 0
    best_state = None
    curve: list[dict[str, float]] = []
    stopped_reason = None
    if ck is not None:
        r = ck["resume"]
        opt.load_state_dict(r["optimizer"])
        if sched is not None and r.get("scheduler") is not None:
            sched.load_state_dict(r["scheduler"])
        start_epoch = int(ck["epochs_run"])
        best_loss, best_epoch, bad_epochs = float(r["best_loss"]), int(r["best_epoch"]), int(r["bad_epochs"])
        best_state = {k: v.to(dev) for k, v in r["best_state"].items()}
        curve = [dict(c) for c in r["learning_curve"]]
        if r.get("stopped_reason") == "early_stopping":
            stopped_reason = "early_stopping"
    del ck

    train_forces = fc > 0 and tr.forces is not None
    eval_forces = derivatives
    has_val = va.n > 0
    n_train = tr.n
    bs = tc.batch_size

    def val_pass():
        """(val_loss, metrics dict) on the validation store with the current weights."""
        e, f = predict_store(pot, va, forces=eval_forces, batch_size=max(bs, 64))
        e_res = (e - va.energy) / pot.sigma
        if tc.energy_per_atom:
            e_res = e_res / va.natoms.to(e_res.dtype)
        f_res = None
        if train_forces and f is not None:
            f_res = ((f - va.forces) / (pot.sigma * force_norm))[va.free]
        le, lf = _loss_terms(tc.loss, e_res, f_res)
        loss = le if lf is None else le + fc * lf
        nat = va.natoms.to(e.dtype)
        de = e - va.energy
        m = {"val_energy_mae": float(de.abs().mean()), "val_energy_mae_per_atom": float((de / nat).abs().mean())}
        if f is not None:
            df = (f - va.forces).abs()
            m["val_force_mae"] = float(df.mean())
            m["val_force_mae_free"] = float(df[va.free].mean()) if bool(va.free.any()) else math.nan
        else:
            m["val_force_mae"] = m["val_force_mae_free"] = math.nan
        return float(loss), m

    # ---------------- epochs ----------------
    t_train = time.perf_counter()
    bar = None
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
                       TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True)
        task = bar.add_task("train", total=budget.epochs, completed=start_epoch, info="")
        bar.start()
    try:
        epoch = start_epoch
        while epoch < budget.epochs and stopped_reason is None:
            es = _epoch_seed(cfg.seed, epoch)
            torch.manual_seed(es)  # dropout of this epoch
            perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(es)).to(dev)
            pot.train()
            total = torch.zeros((), dtype=dtype, device=dev)
            for s in range(0, n_train, bs):
                sids = perm[s:s + bs]
                batch, aidx = tr.batch(sids, derivatives=train_forces)
                opt.zero_grad(set_to_none=True)
                e, f = pot.scaled_energy_forces(batch, forces=train_forces, create_graph=True)
                e_res = e - tr.e_scaled[sids]
                if tc.energy_per_atom:
                    e_res = e_res / batch.natoms.to(dtype)
                f_res = None
                if train_forces:
                    f_res = (f - tr.f_scaled[aidx])[tr.free[aidx]] / force_norm
                le, lf = _loss_terms(tc.loss, e_res, f_res)
                loss = le if lf is None else le + fc * lf
                loss.backward()
                if tc.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
                opt.step()
                total = total + loss.detach() * sids.numel()
            train_loss = float(total) / n_train
            lr = float(opt.param_groups[0]["lr"])
            if has_val:
                val_loss, vm = val_pass()
            else:
                val_loss = train_loss
                vm = {k: math.nan for k in CURVE_FIELDS if k.startswith("val_") and k != "val_loss"}
            if not math.isfinite(val_loss) or not math.isfinite(train_loss):
                raise MfhpoError(f"training diverged at epoch {epoch + 1} (loss is NaN/inf; lower training.lr)")
            if sched is not None:
                if tc.scheduler == "plateau":
                    sched.step(val_loss)
                else:
                    sched.step()
            epoch += 1
            if val_loss < best_loss:
                best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in pot.state_dict().items()}
            else:
                bad_epochs += 1
            row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "val_loss": val_loss, **vm,
                   "time_s": time.perf_counter() - t_train}
            curve.append(row)
            if bar is not None:
                bar.update(task, completed=epoch,
                           info=f"loss {train_loss:.3g} val E {vm['val_energy_mae']:.3g} eV F {vm['val_force_mae_free']:.3g}")
            if epoch % max(1, budget.epochs // 20) == 0 or epoch == budget.epochs:
                logger(f"epoch {epoch}: lr {lr:.3g} train_loss {train_loss:.4g} val_loss {val_loss:.4g} "
                       f"val_E_mae {vm['val_energy_mae']:.4g} eV val_F_mae_free {vm['val_force_mae_free']:.4g} eV/A")
            if tc.early_stopping_patience is not None and bad_epochs >= tc.early_stopping_patience:
                stopped_reason = "early_stopping"
                logger(f"early stopping at epoch {epoch} (best epoch {best_epoch})")
            elif time_limit_s is not None and time.perf_counter() - t_start > time_limit_s:
                stopped_reason = "time_limit"
                logger(f"time limit {time_limit_s:.0f} s reached at epoch {epoch}")
    finally:
        if bar is not None:
            bar.stop()
    epochs_run = epoch
    train_s = time.perf_counter() - t_train
    last_state = {k: v.detach().clone() for k, v in pot.state_dict().items()}
    if best_state is None:
        best_state = last_state
    pot.load_state_dict(best_state)

    # ---------------- final metrics with the best weights ----------------
    metrics: dict[str, dict[str, float]] = {}
    for name, st, idx in (("train", tr, train_idx), ("val", va, val_idx), ("test", te, test_idx)):
        if st is None:
            continue
        e, f = predict_store(pot, st, forces=eval_forces, batch_size=max(bs, 64))
        e_np = e.detach().cpu().double().numpy()
        f_list = None
        if f is not None:
            f_np = f.detach().cpu().double().numpy()
            f_list = np.split(f_np, np.cumsum(st.natoms.cpu().numpy())[:-1]) if st.n else []
        metrics[name] = dataset_metrics(dataset.subset(idx), e_np, f_list, refs)

    # ---------------- outputs ----------------
    ck_path = out_dir / "checkpoint.pt"
    to_cpu = lambda sd: {k: v.detach().cpu() for k, v in sd.items()}  # noqa: E731
    save_checkpoint(ck_path, {
        "config": cfg.model_dump(mode="json"),
        "setting": setting.to_dict(),
        "base_dir": None if base_dir is None else str(base_dir),
        "elements": list(elements),
        "n_feat": int(setting.nfeat),
        "model_state": to_cpu(best_state),
        "reference_energies": {k: float(v) for k, v in refs.items()},
        "sigma": sigma,
        "resume": {
            "model_state": to_cpu(last_state),
            "optimizer": opt.state_dict(),
            "scheduler": None if sched is None else sched.state_dict(),
            "best_state": to_cpu(best_state),
            "best_loss": float(best_loss),
            "best_epoch": int(best_epoch),
            "bad_epochs": int(bad_epochs),
            "stopped_reason": stopped_reason,
            "learning_curve": curve,
        },
        "data_hash": dataset.hash(),
        "split_hash": s_hash,
        "budget": {"epochs": int(budget.epochs), "subset_fraction": float(budget.subset_fraction)},
        "epochs_run": int(epochs_run),
        "best_epoch": int(best_epoch),
        "n_train": int(n_train),
        "metrics": metrics,
    })
    (out_dir / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2))
    with open(out_dir / "learning_curve.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CURVE_FIELDS))
        w.writeheader()
        for row in curve:
            w.writerow({k: row.get(k) for k in CURVE_FIELDS})
    total_s = time.perf_counter() - t_start
    v = metrics.get("val", {})
    logger(f"done: {epochs_run} epochs (best {best_epoch}) in {total_s:.1f} s; val energy MAE "
           f"{v.get('energy_mae', math.nan):.4g} eV (baseline {v.get('baseline_energy_mae', math.nan):.4g}), "
           f"force MAE free {v.get('force_mae_free', math.nan):.4g} eV/A")
    return TrainResult(
        metrics=metrics, learning_curve=curve, checkpoint_path=ck_path, epochs_run=epochs_run, warm_start=warm,
        timings={"featurize_s": featurize_s, "train_s": train_s, "total_s": total_s}, device=str(dev),
        n_train=n_train, best_epoch=best_epoch, stopped_reason=stopped_reason, out_dir=out_dir)


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
                  device: Optional[str] = None, init_checkpoint: Optional[Path] = None) -> TrainResult:
    """``mfhpo train``: load config + data, train, print val metrics next to the baselines."""
    from rich.console import Console
    from rich.table import Table

    from mfhpo.config import load_trial_config
    from mfhpo.data import load_dataset

    cfg = load_trial_config(config)
    try:
        budget = Budget(epochs=epochs if epochs is not None else cfg.training.epochs, subset_fraction=subset)
    except Exception:
        raise MfhpoError(f"--epochs must be >= 1 and --subset in (0, 1] (got {epochs}, {subset})") from None
    console = Console(stderr=True)
    ds = load_dataset(data, group_key=cfg.split.group_key)
    # a held-out test split (split.test_fraction > 0) is scored once at the end, never used for selection
    result = train(cfg, ds, budget, Path(out), init_checkpoint=init_checkpoint, device=device, progress=True,
                   log=lambda m: console.print(m, highlight=False), base_dir=Path(config).resolve().parent,
                   eval_test=cfg.split.test_fraction > 0)
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
