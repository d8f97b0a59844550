"""SingleNN / BPNN atomistic networks and the :class:`Potential` that wraps one with its scalers.

A :class:`Potential` maps *raw* GMP fingerprints of a batch of structures to energies (eV) and
forces (eV/Å)::

    x_i   = (fp_i - offset[Z_i]) * scale[Z_i]                 feature scaling (fitted on training)
    e_i   = MLP(x_i [, onehot(Z_i)])  (SingleNN: one MLP for all elements; BPNN: MLP[Z_i])
    E'    = Σ_i e_i                                           energy in scaled units
    E     = sigma * E' + Σ_i ref[Z_i]                         eV
    F'_j  = -Σ_{p: pair_j[p]=j} dfp'[p]^T · dE'/dx[pair_i[p]]   scaled forces, dfp' = dfp * scale[Z_i]
    F     = sigma * F'                                        eV/Å

The hot path works on concatenated atoms of many structures (``seg`` = structure index of each
atom) and sparse pair lists, without per-structure Python loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from mfhpo.config import ModelConfig

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "celu": nn.CELU,
}


def build_mlp(n_in: int, cfg: ModelConfig) -> nn.Sequential:
    """``[Linear, (BatchNorm1d), act, (Dropout)] x L -> Linear(h_L, 1)`` as AMPTorch's SingleNN."""
    layers: list[nn.Module] = []
    width = n_in
    for h in cfg.hidden_layers:
        layers.append(nn.Linear(width, h))
        if cfg.batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(ACTIVATIONS[cfg.activation]())
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        width = h
    layers.append(nn.Linear(width, 1))
    mlp = nn.Sequential(*layers)
    if cfg.init != "default":
        for m in mlp.modules():
            if isinstance(m, nn.Linear):
                if cfg.init == "xavier":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
    return mlp


class AtomicNet(nn.Module):
    """Atomic energy (scaled units) from a scaled fingerprint.

    ``singlenn``: one MLP shared by all elements (the element enters only through the fingerprint
    and the per-element feature scaling; with ``element_input="onehot"`` also as a one-hot vector
    appended to the scaled fingerprint). ``bpnn``: one MLP per element (Behler-Parrinello).
    """

    def __init__(self, n_in: int, n_elements: int, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.kind
        self.n_elements = n_elements
        self.onehot = cfg.element_input == "onehot"
        if cfg.kind == "singlenn":
            self.mlp = build_mlp(n_in + (n_elements if self.onehot else 0), cfg)
        else:
            self.mlps = nn.ModuleList([build_mlp(n_in, cfg) for _ in range(n_elements)])

    def forward(self, x: torch.Tensor, elem: torch.Tensor) -> torch.Tensor:
        if self.kind == "singlenn":
            if self.onehot:
                x = torch.cat([x, nn.functional.one_hot(elem, self.n_elements).to(x.dtype)], dim=1)
            return self.mlp(x).squeeze(-1)
        out = x.new_zeros(x.shape[0])
        for e in torch.unique(elem).tolist():
            idx = torch.nonzero(elem == e).squeeze(1)
            mlp = self.mlps[e]
            if self.training and idx.numel() == 1 and any(isinstance(m, nn.BatchNorm1d) for m in mlp):
                # BatchNorm cannot normalise one sample: use its running statistics for this atom
                mlp.eval()
                y = mlp(x[idx]).squeeze(-1)
                mlp.train()
            else:
                y = mlp(x[idx]).squeeze(-1)
            out = out.index_put((idx,), y)
        return out


@dataclass
class Batch:
    """Concatenated atoms of ``n_struct`` structures (all tensors on one device).

    ``fp`` raw fingerprints (na, nfeat); ``elem`` element index per atom; ``seg`` structure index
    (0..n_struct-1) per atom; ``natoms`` (n_struct,); optional derivative pairs with *batch-local*
    atom indices ``pair_i``, ``pair_j`` and raw ``dfp`` (npair, nfeat, 3) -- or ``dfp_scaled`` when
    the feature scale has already been applied (training stores do this once).
    """

    fp: torch.Tensor
    elem: torch.Tensor
    seg: torch.Tensor
    natoms: torch.Tensor
    n_struct: int
    pair_i: Optional[torch.Tensor] = None
    pair_j: Optional[torch.Tensor] = None
    dfp: Optional[torch.Tensor] = None
    scaled: bool = False  # True when fp / dfp already carry the feature scaling

    @property
    def has_derivatives(self) -> bool:
        return self.dfp is not None


class Potential(nn.Module):
    """Network + feature scalers + reference energies + energy scale: raw fingerprints -> eV, eV/Å."""

    def __init__(self, n_feat: int, elements: Sequence[str], cfg: ModelConfig):
        super().__init__()
        self.elements = list(elements)
        self.n_feat = n_feat
        self.model_cfg = cfg
        ne = len(self.elements)
        self.net = AtomicNet(n_feat, ne, cfg)
        self.register_buffer("feat_offset", torch.zeros(ne, n_feat))
        self.register_buffer("feat_scale", torch.ones(ne, n_feat))
        self.register_buffer("ref_energy", torch.zeros(ne))
        self.register_buffer("sigma", torch.ones(()))

    # ----------------------------------------------------------------------------------------
    def element_index(self, symbols: Sequence[str], source: str = "<data>") -> torch.Tensor:
        col = {e: k for k, e in enumerate(self.elements)}
        try:
            return torch.tensor([col[s] for s in symbols], dtype=torch.long)
        except KeyError as exc:
            from mfhpo.errors import MfhpoError

            raise MfhpoError(
                f"{source}: element {exc.args[0]} was not in the training data of this potential "
                f"(known: {', '.join(self.elements)})"
            ) from None

    def scale_features(self, fp: torch.Tensor, elem: torch.Tensor) -> torch.Tensor:
        return (fp - self.feat_offset[elem]) * self.feat_scale[elem]

    def scale_dfp(self, dfp: torch.Tensor, elem_i: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Derivatives of the scaled features (``out=dfp``: in place)."""
        return torch.mul(dfp, self.feat_scale[elem_i].unsqueeze(-1), out=out)

    # ----------------------------------------------------------------------------------------
    def scaled_energy_forces(self, batch: Batch, forces: bool, create_graph: bool = False):
        """Energies (n_struct,) and forces (na, 3) in *scaled* units (before sigma / references).

        ``forces=True`` needs derivatives in the batch. ``create_graph=True`` keeps the graph of the
        forces for a force loss.
        """
        if batch.scaled:
            x = batch.fp
        else:
            x = self.scale_features(batch.fp, batch.elem)
        if forces:
            x = x.detach().requires_grad_(True)
        e_atom = self.net(x, batch.elem)
        energy = e_atom.new_zeros(batch.n_struct).index_add(0, batch.seg, e_atom)
        if not forces:
            return energy, None
        if not batch.has_derivatives:
            raise ValueError("forces requested but the batch has no fingerprint derivatives")
        (g,) = torch.autograd.grad(energy.sum(), x, create_graph=create_graph)
        dfp = batch.dfp if batch.scaled else self.scale_dfp(batch.dfp, batch.elem[batch.pair_i])
        # contribution of pair p to atom pair_j: dfp[p]^T . g[pair_i]   -> (npair, 3)
        contrib = torch.einsum("pkc,pk->pc", dfp, g[batch.pair_i])
        f = contrib.new_zeros(x.shape[0], 3).index_add(0, batch.pair_j, contrib)
        return energy, -f

    def reference(self, batch: Batch) -> torch.Tensor:
        return self.ref_energy.new_zeros(batch.n_struct).index_add(0, batch.seg, self.ref_energy[batch.elem])

    def forward(self, batch: Batch, forces: bool = True):
        """Energies (eV, (n_struct,)) and forces (eV/Å, (na, 3) or None)."""
        e, f = self.scaled_energy_forces(batch, forces=forces, create_graph=False)
        energy = e * self.sigma + self.reference(batch)
        return energy, (None if f is None else f * self.sigma)


# --------------------------------------------------------------------------------------------
# device-resident feature store with vectorised batching
# --------------------------------------------------------------------------------------------


def _ranges(starts: torch.Tensor, counts: torch.Tensor):
    """Concatenated ``arange(starts[k], starts[k] + counts[k])``; also the segment of each entry and
    the exclusive cumulative offsets of the segments. No Python loop over segments."""
    total = int(counts.sum())
    seg = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts, output_size=total)
    offs = torch.cumsum(counts, 0) - counts
    idx = starts[seg] + torch.arange(total, device=counts.device) - offs[seg]
    return idx, seg, offs


class FeatureStore:
    """Fingerprints (and derivatives, targets) of many structures, concatenated on one device.

    ``feats`` are mfhpo.gmp ``Features`` (``fp``; optionally ``pair_i``, ``pair_j``, ``dfp`` with
    structure-local indices). ``elem`` is one LongTensor of element indices per structure.
    ``energies`` (eV), ``forces`` (list of (natoms, 3) eV/Å) and ``free`` masks are optional labels.
    """

    def __init__(self, feats, elem: Sequence[torch.Tensor], *, device, dtype, derivatives: bool,
                 energies=None, forces=None, free=None, nfeat: int | None = None):
        self.device = torch.device(device)
        self.dtype = dtype
        self.n = len(feats)
        natoms = [int(f.fp.shape[0]) for f in feats]
        self.natoms = torch.tensor(natoms, dtype=torch.long, device=self.device)
        self.atom_start = torch.cumsum(self.natoms, 0) - self.natoms
        cat = lambda ts, **kw: (torch.cat([t.to(self.device, **kw) for t in ts]) if ts else None)  # noqa: E731
        nfeat = int(feats[0].fp.shape[1]) if feats else int(nfeat or 0)
        self.fp = cat([f.fp for f in feats], dtype=dtype) if feats else torch.zeros(0, nfeat, dtype=dtype, device=self.device)
        self.elem = cat(list(elem)) if feats else torch.zeros(0, dtype=torch.long, device=self.device)
        self.derivatives = bool(derivatives and self.n > 0)
        self.scaled = False
        if self.derivatives:
            for f in feats:
                if getattr(f, "dfp", None) is None:
                    raise ValueError("derivatives requested but a Features object has no dfp")
            npairs = [int(f.pair_i.shape[0]) for f in feats]
            self.npairs = torch.tensor(npairs, dtype=torch.long, device=self.device)
            self.pair_start = torch.cumsum(self.npairs, 0) - self.npairs
            self.pair_i = cat([f.pair_i for f in feats], dtype=torch.long)
            self.pair_j = cat([f.pair_j for f in feats], dtype=torch.long)
            self.dfp = cat([f.dfp for f in feats], dtype=dtype)
        self.energy = None if energies is None else torch.as_tensor(energies, dtype=dtype).to(self.device)
        self.forces = None
        if forces is not None:
            self.forces = cat([torch.as_tensor(f) for f in forces], dtype=dtype) if forces else None
        if free is not None:
            self.free = cat([torch.as_tensor(m, dtype=torch.bool) for m in free]) if free else None
        else:
            self.free = torch.ones(self.fp.shape[0], dtype=torch.bool, device=self.device)
        # scaled training targets (set by set_targets)
        self.e_scaled = None
        self.f_scaled = None

    @property
    def n_atoms(self) -> int:
        return int(self.fp.shape[0])

    def apply_scaling(self, pot: "Potential") -> None:
        """Replace fp / dfp by their scaled versions (in place: the raw values are not kept)."""
        if self.scaled:
            return
        self.fp = pot.scale_features(self.fp, self.elem)
        if self.derivatives:
            idx = self.atom_start.repeat_interleave(self.npairs) + self.pair_i
            chunk = 1 << 18
            for s in range(0, self.dfp.shape[0], chunk):  # in place: no copies
                block = self.dfp[s:s + chunk]
                pot.scale_dfp(block, self.elem[idx[s:s + chunk]], out=block)
        self.scaled = True

    def set_targets(self, pot: "Potential") -> None:
        """Scaled targets: (E - Σ refs) / sigma per structure, F / sigma per atom."""
        if self.energy is None:
            return
        all_ids = torch.arange(self.n, device=self.device)
        ref = pot.ref_energy.to(self.dtype)[self.elem]
        seg = torch.repeat_interleave(all_ids, self.natoms)
        eref = torch.zeros(self.n, dtype=self.dtype, device=self.device).index_add(0, seg, ref)
        sigma = pot.sigma.to(self.dtype)
        self.e_scaled = (self.energy - eref) / sigma
        if self.forces is not None:
            self.f_scaled = self.forces / sigma

    def atom_rows(self, sids: torch.Tensor) -> torch.Tensor:
        """Indices of the atoms (rows of ``fp``) of the structures ``sids``."""
        sids = sids.to(self.device)
        return _ranges(self.atom_start[sids], self.natoms[sids])[0]

    def batch(self, sids: torch.Tensor, derivatives: bool):
        """A :class:`Batch` of the structures ``sids`` plus an index of its atoms in the store."""
        sids = sids.to(self.device)
        counts = self.natoms[sids]
        aidx, seg, aoffs = _ranges(self.atom_start[sids], counts)
        b = Batch(fp=self.fp[aidx], elem=self.elem[aidx], seg=seg, natoms=counts, n_struct=int(sids.numel()),
                  scaled=self.scaled)
        if derivatives:
            pidx, pseg, _ = _ranges(self.pair_start[sids], self.npairs[sids])
            base = aoffs[pseg]
            b.pair_i = self.pair_i[pidx] + base
            b.pair_j = self.pair_j[pidx] + base
            b.dfp = self.dfp[pidx]
        return b, aidx


# --------------------------------------------------------------------------------------------
# prediction from features
# --------------------------------------------------------------------------------------------


def predict_store(pot: Potential, store: FeatureStore, forces: bool, batch_size: int = 64):
    """Energies (n,) and concatenated forces (n_atoms, 3) in eV / eV/Å for every structure of a store
    (tensors on the store's device; forces None when not asked for)."""
    pot.eval()
    es, fs = [], []
    ids = torch.arange(store.n, device=store.device)
    for s in range(0, store.n, batch_size):
        batch, _ = store.batch(ids[s:s + batch_size], derivatives=forces)
        if forces:
            with torch.enable_grad():
                e, f = pot(batch, forces=True)
            fs.append(f.detach())
        else:
            with torch.no_grad():
                e, _ = pot(batch, forces=False)
        es.append(e.detach())
    dt = store.dtype
    e = torch.cat(es) if es else torch.zeros(0, dtype=dt, device=store.device)
    f = (torch.cat(fs) if fs else torch.zeros(0, 3, dtype=dt, device=store.device)) if forces else None
    return e, f


def predictions_as_numpy(e: torch.Tensor, f: Optional[torch.Tensor], natoms: Sequence[int]):
    """:func:`predict_store`'s tensors as float64 numpy: energies (n,) and one (natoms, 3) force array
    per structure (None without forces)."""
    e_np = e.detach().cpu().numpy().astype(np.float64)
    if f is None:
        return e_np, None
    f_np = f.detach().cpu().numpy().astype(np.float64)
    return e_np, list(np.split(f_np, np.cumsum(np.asarray(natoms, dtype=np.int64))[:-1]))
