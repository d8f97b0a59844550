"""Native GMP featurizer in PyTorch (definition: docs/featurizer.md, /work/shared/docs/gmp_spec.md).

How it is computed (all vectorised over the pairs of a chunk of structures, same code on CPU/CUDA):

1. Neighbour pairs ``(i, j, T)`` with ``|d| < R_c`` (vesin, :mod:`mfhpo.gmp.neighbors`).
2. For a Gaussian probe ``A exp(-alpha r^2)`` and one density Gaussian ``B exp(-beta |r-d|^2)`` the
   overlap with a polynomial ``P`` is ``K(|d|) E[P(X)]``, ``X ~ N(lambda d, s^2)``. Expanding the
   Gaussian moments symbolically (:mod:`mfhpo.gmp.mcsh`), ``E[P(X)]`` is a fixed linear combination
   of ``d^m lambda^|m| s^(2j)``. So each component sum is
   ``mu_c = sum_pairs sum_(m,j) a_c(m,j) d^m R_(|m|,j)(|d|^2)`` with a few *radial functions*
   ``R_(l,j) = sum_k K_k lambda_k^l s_k^(2j)`` per (pair, sigma): one ``exp`` per (pair, Gaussian,
   sigma) and one small GEMM per neighbour element give all of them.
3. Products ``d^m R`` (the "basis") times a constant matrix (GEMM) give the components per pair;
   a CSR sparse matrix sums them over the pairs of each centre.
4. Derivatives are analytic: ``d/dd [d^m R(|d|^2)] = (grad d^m) R + 2 d d^m R'`` — again
   basis products times constant matrices; the chain rule to the features is applied per pair,
   and a sparse matrix folds pairs into the unique (i, j) list (``+`` for j, ``-`` for the centre).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from ase import Atoms

from mfhpo.errors import MfhpoError
from mfhpo.gmp import mcsh
from mfhpo.gmp.neighbors import NeighborPairs, neighbor_pairs
from mfhpo.gmp.setting import GMPSetting

GMP_VECTOR_THRESHOLD = 1e-8  # gmp, square=False, multi-component groups: F <= 1e-8 -> 0 (spec 6)
ORDERNORM_THRESHOLD = 1e-2  # gmpordernorm, square=False: sqrt(S) < 1e-2 -> 0 (spec 10)

KIND_SIGNED, KIND_NORM, KIND_SUMSQ = 0, 1, 2


# --------------------------------------------------------------------------------------------
# result type
# --------------------------------------------------------------------------------------------


@dataclass
class Features:
    """Fingerprints of one structure.

    ``fp`` (natoms, nfeat). With derivatives: ``pair_i, pair_j`` (npair,) int64 and ``dfp``
    (npair, nfeat, 3) = d fp[pair_i, :] / d r[pair_j, :]; each (i, j) once (periodic images of j
    summed), i == j included.
    """

    fp: torch.Tensor
    pair_i: Optional[torch.Tensor] = None
    pair_j: Optional[torch.Tensor] = None
    dfp: Optional[torch.Tensor] = None

    @property
    def natoms(self) -> int:
        return int(self.fp.shape[0])

    @property
    def nfeat(self) -> int:
        return int(self.fp.shape[1])

    @property
    def has_derivatives(self) -> bool:
        return self.dfp is not None

    def to(self, device=None, dtype=None) -> "Features":
        def mv(t, floating):
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if floating else None)

        return Features(mv(self.fp, True), mv(self.pair_i, False), mv(self.pair_j, False), mv(self.dfp, True))

    def numpy(self) -> dict:
        out = {"fp": self.fp.detach().cpu().numpy()}
        if self.dfp is not None:
            out.update(pair_i=self.pair_i.cpu().numpy(), pair_j=self.pair_j.cpu().numpy(),
                       dfp=self.dfp.detach().cpu().numpy())
        return out

    def dense_dfp(self) -> torch.Tensor:
        return dense_dfp(self, self.natoms)


def dense_dfp(features: Features, natoms: int | None = None) -> torch.Tensor:
    """The sparse derivatives as a dense (natoms, nfeat, natoms, 3) tensor."""
    if features.dfp is None:
        raise MfhpoError("features were computed without derivatives")
    n = features.natoms if natoms is None else int(natoms)
    out = torch.zeros((n, features.nfeat, n, 3), dtype=features.dfp.dtype, device=features.dfp.device)
    out[features.pair_i, :, features.pair_j, :] = features.dfp
    return out


# --------------------------------------------------------------------------------------------
# compiled plan of a setting
# --------------------------------------------------------------------------------------------


class _Plan:
    """Constant tables of a setting on one device/dtype (built once, cached)."""

    def __init__(self, setting: GMPSetting, device: torch.device, dtype: torch.dtype):
        self.setting = setting
        self.device, self.dtype = device, dtype
        s = setting
        sigmas = []
        for _, _, sg in s.columns:
            if sg not in sigmas:
                sigmas.append(sg)
        self.sigmas = sigmas
        ns = len(sigmas)
        ordernorm = s.scheme == "gmpordernorm"
        use_solid = ordernorm and s.solid_harmonics

        # slots: the distinct components needed per sigma
        slot_keys: list[list] = [[] for _ in range(ns)]
        slot_polys: list[list] = [[] for _ in range(ns)]
        col_cc = []  # per column: list of (sigma index, slot, weight)
        kinds, thresholds = [], []
        for (order, group, sg) in s.columns:
            si = sigmas.index(sg)
            inv_rs = 1.0 if use_solid else s.inv_rs(sg)
            if ordernorm:
                comps = [(c, mcsh.multinomial_weight(abc)) for abc in mcsh.group_indices(order) for c in mcsh.components(abc)]
            else:
                abc = mcsh.group_indices(order)[group - 1]
                comps = [(c, 1.0) for c in mcsh.components(abc)]
            entries = []
            for comp, w in comps:
                if comp not in slot_keys[si]:
                    slot_keys[si].append(comp)
                    poly = mcsh.solid_harmonic(comp) if use_solid else mcsh.unit_sphere_harmonic(comp)
                    slot_polys[si].append(mcsh.scale_by_inv_rs(poly, inv_rs))
                entries.append((si, slot_keys[si].index(comp), w))
            col_cc.append(entries)
            if s.square:
                kinds.append(KIND_SUMSQ)
                thresholds.append(0.0)
            elif not ordernorm and len(comps) == 1:
                kinds.append(KIND_SIGNED)
                thresholds.append(0.0)
            else:
                kinds.append(KIND_NORM)
                thresholds.append(ORDERNORM_THRESHOLD if ordernorm else GMP_VECTOR_THRESHOLD)
        nslot = max(len(k) for k in slot_keys)
        self.nslot = nslot

        # expectation terms of every slot: {(m, j): coef}
        terms = [[mcsh.gaussian_expectation(p) for p in polys] for polys in slot_polys]
        radial: list = []  # (l, j)
        for per in terms:
            for t in per:
                for (m, j) in t:
                    r = (sum(m), j)
                    if r not in radial:
                        radial.append(r)
        radial.sort()
        self.radial = radial
        nr = len(radial)
        self.nr = nr
        maxdeg = max(l for l, _ in radial)
        self.maxdeg = maxdeg
        # monomials ordered in degree blocks; block l = [x * block(l-1), y * tail_l(block(l-1)), z^l]
        blocks = [[(0, 0, 0)]]
        for l in range(1, maxdeg + 1):
            prev = blocks[-1]
            blocks.append([(a + 1, b, c) for a, b, c in prev] + [(a, b + 1, c) for a, b, c in prev[-l:]] + [(0, 0, l)])
        self.deg_off = np.cumsum([0] + [len(b) for b in blocks]).tolist()
        monos = [m for b in blocks for m in b]
        self.monos = monos
        # basis = products (monomial block of degree g) x (radial r); mu basis: g = l(r);
        # derivative basis adds g = l(r) - 1
        mu_blocks = [(ri, l) for ri, (l, j) in enumerate(radial)]
        der_blocks = mu_blocks + [(ri, l - 1) for ri, (l, j) in enumerate(radial) if l >= 1]
        def layout(blks):
            pos, off, out = {}, 0, []
            for ri, g in blks:
                n = self.deg_off[g + 1] - self.deg_off[g]
                out.append((ri, g, off, off + n))
                for k, m in enumerate(blocks[g]):
                    pos[(m, ri)] = off + k
                off += n
            return pos, off, out
        pos_mu, nbm, self.mu_blocks = layout(mu_blocks)
        pos_der, nbd, self.der_blocks = layout(der_blocks)

        # A[s, b, slot] (mu basis) and M1[s, b, 3, slot] (d/dd_x of the monomial part, derivative basis)
        A = np.zeros((ns, nbm, nslot))
        M1 = np.zeros((ns, nbd, 3, nslot))
        for si in range(ns):
            for slot, t in enumerate(terms[si]):
                for (m, j), coef in t.items():
                    ri = radial.index((sum(m), j))
                    A[si, pos_mu[(m, ri)], slot] += coef
                    for x in range(3):
                        if m[x] > 0:
                            mm = tuple(m[k] - (k == x) for k in range(3))
                            M1[si, pos_der[(mm, ri)], x, slot] += coef * m[x]
        self.shared_A = all(np.array_equal(A[0], A[k]) for k in range(ns))
        t = dict(device=device, dtype=dtype)
        li = dict(device=device, dtype=torch.long)
        self.A = torch.tensor(A, **t)
        self.M1 = torch.tensor(M1, **t)
        self.nbm, self.nbd = nbm, nbd

        # radial tables per element: eta (K*ns,), W (K*ns, 2*ns*nr) = [R | dR/d(d^2)]
        if ordernorm:
            amp = [(sg * math.sqrt(2 * math.pi)) ** -3 for sg in sigmas]
        else:
            amp = [1.0 / (sg * math.sqrt(2 * math.pi)) for sg in sigmas]
        self.elements = list(s.elements)
        self.eta, self.W = [], []
        for el in self.elements:
            Bs, betas = s.densities[el]
            K = len(Bs)
            eta = np.zeros((K, ns))
            W = np.zeros((K, ns, 2, ns, nr))
            for k, (B, beta) in enumerate(zip(Bs, betas)):
                for si, sg in enumerate(sigmas):
                    alpha = 1.0 / (2 * sg * sg)
                    g = alpha + beta
                    lam = beta / g
                    s2 = 1.0 / (2 * g)
                    e = alpha * beta / g
                    eta[k, si] = e
                    pref = amp[si] * B * (math.pi / g) ** 1.5
                    for ri, (l, j) in enumerate(radial):
                        v = pref * lam ** l * s2 ** j
                        W[k, si, 0, si, ri] = v
                        W[k, si, 1, si, ri] = -e * v
            self.eta.append(torch.tensor(eta.reshape(-1), **t))
            self.W.append(torch.tensor(W.reshape(K * ns, 2 * ns * nr), **t))
            
        # columns: flattened component index fi = si * nslot + slot, weights, selection matrix
        cc_fi, cc_w, cc_col = [], [], []
        for col, entries in enumerate(col_cc):
            for si, slot, w in entries:
                cc_fi.append(si * nslot + slot)
                cc_w.append(w)
                cc_col.append(col)
        ncc, ncol = len(cc_fi), len(s.columns)
        Sm = np.zeros((ncc, ncol))
        Sm[np.arange(ncc), cc_col] = 1.0
        self.ncc, self.ncol = ncc, ncol
        self.cc_fi = torch.tensor(cc_fi, **li)
        self.cc_identity = cc_fi == list(range(ns * nslot))
        self.cc_w = torch.tensor(cc_w, **t)
        self.cc_col = torch.tensor(cc_col, **li)
        self.S = torch.tensor(Sm, **t)
        self.kind = torch.tensor(kinds, **li)
        self.kind_cc = self.kind[self.cc_col]
        self.thr = torch.tensor(thresholds, **t)
        self.cosine = s.cutoff_function == "cosine"
        self.cutoff = s.cutoff
        self.ns = ns
        # columns per sigma (for the per-centre chain-rule matrices of the derivative path)
        col_si = [sigmas.index(sg) for _, _, sg in s.columns]
        col_j, count = [], [0] * ns
        for si in col_si:
            col_j.append(count[si])
            count[si] += 1
        ncs = max(count)
        self.ncs = ncs
        Scc = np.zeros((ncc, ns * nslot * ncs))
        for k in range(ncc):
            col = cc_col[k]
            Scc[k, cc_fi[k] * ncs + col_j[col]] = 1.0
        self.Scc = torch.tensor(Scc, **t)
        flat = [j * ns + si for si, j in zip(col_si, col_j)]  # dF layout (.., j, s, x)
        self.col_flat = torch.tensor(flat, **li)
        self.col_identity = flat == list(range(ns * ncs))

    def widest(self, derivatives: bool) -> int:
        """Doubles per (padded) pair of the largest temporary (for chunking)."""
        ns = self.ns
        if derivatives:
            return max(ns * self.nbd, 3 * ns * self.ncs, 2 * ns * self.nr, len(self.monos))
        return max(ns * self.nbm, ns * self.nr, len(self.monos))


_PLANS: dict = {}


def _plan(setting: GMPSetting, device: torch.device, dtype: torch.dtype) -> _Plan:
    key = (setting.key(), str(device), dtype)
    p = _PLANS.get(key)
    if p is None:
        if len(_PLANS) > 16:
            _PLANS.clear()
        p = _PLANS[key] = _Plan(setting, device, dtype)
    return p


# --------------------------------------------------------------------------------------------
# kernels on one chunk of pairs
# --------------------------------------------------------------------------------------------


def _csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape, device, dtype) -> torch.Tensor:
    """CSR matrix with duplicates summed (built on the CPU)."""
    import scipy.sparse as sp

    m = sp.csr_matrix((vals, (rows, cols)), shape=shape)
    m.sum_duplicates()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data), size=shape, dtype=dtype, check_invariants=False).to(device)


def _radial(plan: _Plan, d: torch.Tensor, elem_counts: list[int], deriv: bool) -> torch.Tensor:
    """Radial functions of pairs sorted by neighbour element: (np, ns*nr) [| (np, ns*nr) R']."""
    ns, nr = plan.ns, plan.nr
    npair = d.shape[0]
    dsq = (d * d).sum(1)
    width = ns * nr * (2 if deriv else 1)
    RR = torch.empty((npair, width), dtype=plan.dtype, device=plan.device)
    off = 0
    for e, cnt in enumerate(elem_counts):
        if cnt == 0:
            continue
        sl = slice(off, off + cnt)
        E = torch.exp(dsq[sl, None] * (-plan.eta[e])[None, :])
        W = plan.W[e] if deriv else plan.W[e][:, : ns * nr]
        torch.mm(E, W, out=RR[sl])
        off += cnt
    if plan.cosine:
        rc = plan.cutoff
        r = dsq.sqrt()
        x = (math.pi / rc) * r
        fc = 0.5 * (torch.cos(x) + 1.0)
        R = RR[:, : ns * nr]
        if deriv:
            # d fc / d(r^2) = fc'(r) / (2 r) = -(pi / (4 rc)) sin(x) / r ; limit at r = 0: -(pi/rc)^2 / 4
            pos = r > 0
            sinc = torch.where(pos, torch.sin(x) / torch.where(pos, r, torch.ones_like(r)),
                               torch.full_like(r, math.pi / rc))
            dfc = (-0.25 * math.pi / rc) * sinc
            RR[:, ns * nr:].mul_(fc[:, None]).add_(R * dfc[:, None])
        R.mul_(fc[:, None])
    return RR


def _monomials(plan: _Plan, dT: torch.Tensor) -> torch.Tensor:
    """d^m for all monomials up to maxdeg, feature-major: dT (3, N) -> (nmono, N), degree-block order."""
    off = plan.deg_off
    Dm = torch.empty((off[-1], dT.shape[1]), dtype=plan.dtype, device=plan.device)
    Dm[0] = 1.0
    for l in range(1, plan.maxdeg + 1):
        p0, p1 = off[l - 1], off[l]
        o = off[l]
        n_prev = p1 - p0
        torch.mul(Dm[p0:p1], dT[0:1], out=Dm[o:o + n_prev])
        torch.mul(Dm[p1 - l:p1], dT[1:2], out=Dm[o + n_prev:o + n_prev + l])
        torch.mul(Dm[p1 - 1:p1], dT[2:3], out=Dm[o + n_prev + l:o + n_prev + l + 1])
    return Dm


def _basis(plan: _Plan, Dm3: torch.Tensor, R4: torch.Tensor, blocks, nb: int) -> torch.Tensor:
    """Products d^m R_r of the basis ``blocks``: (ns, nc, nb, nn).

    ``Dm3`` (nc, nmono, nn) and ``R4`` (ns, nr, nc, nn) are views; the pair index is innermost.
    """
    ns, _, nc, nn = R4.shape
    P = torch.empty((ns, nc, nb, nn), dtype=plan.dtype, device=plan.device)
    off = plan.deg_off
    for ri, g, b0, b1 in blocks:
        torch.mul(Dm3[None, :, off[g]:off[g + 1], :], R4[:, ri, :, None, :], out=P[:, :, b0:b1, :])
    return P


def _component_sums(plan: _Plan, P: torch.Tensor) -> torch.Tensor:
    """mu (nc, ns*nslot) from the mu-basis products P (ns, nc, >=nbm, nn)."""
    ns, nc = P.shape[0], P.shape[1]
    Pc = P[:, :, : plan.nbm, :].sum(-1)  # (ns, nc, nbm)
    mu = torch.bmm(Pc, plan.A)  # (ns, nc, nslot)
    return mu.transpose(0, 1).reshape(nc, ns * plan.nslot)


def _compute(plan: _Plan, d_sorted: torch.Tensor, elem_counts: list[int], prow: torch.Tensor,
             d_pad: torch.Tensor, ncenter: int, nn: int, pair_agg: Optional[torch.Tensor]):
    """Features (and derivatives) of the centres of one chunk.

    Pairs are padded per centre: row ``c * nn + k`` of ``d_pad`` (N, 3) (zeros where unused);
    ``d_sorted`` holds the real pairs sorted by neighbour element and ``prow`` their padded rows.
    ``pair_agg``: CSR (nupair, N) with +1 at the pair's (i, j) and -1 at (i, i), or None.
    Returns fp (ncenter, ncol) and dfp (nupair, ncol, 3) or None.
    """
    deriv = pair_agg is not None
    ns, nr, ncs = plan.ns, plan.nr, plan.ncs
    N = d_pad.shape[0]
    RR = _radial(plan, d_sorted, elem_counts, deriv)
    Rpad = torch.zeros((N, RR.shape[1]), dtype=plan.dtype, device=plan.device)
    Rpad.index_copy_(0, prow, RR)
    del RR
    RT = Rpad.t().contiguous()  # (W, N): pair index innermost from here on
    del Rpad
    dT = d_pad.t().contiguous()
    Dm3 = _monomials(plan, dT).view(-1, ncenter, nn).transpose(0, 1)
    R4 = RT[: ns * nr].view(ns, nr, ncenter, nn)
    if not deriv:
        P = _basis(plan, Dm3, R4, plan.mu_blocks, plan.nbm)
        fp, _ = _features(plan, _component_sums(plan, P), need_grad=False)
        return fp, None
    Pf = _basis(plan, Dm3, R4, plan.der_blocks, plan.nbd)
    Q = _basis(plan, Dm3, RT[ns * nr:].view(ns, nr, ncenter, nn), plan.mu_blocks, plan.nbm)
    del RT, Dm3, R4
    mu = _component_sums(plan, Pf)
    fp, G = _features(plan, mu, need_grad=True)  # G (nc, ncc) = dF_col / dmu_cc
    # per-centre chain-rule matrices: Gp[c, s, slot, j] = dF_(s,j) / dmu_(s,slot)
    Gp = (G @ plan.Scc).view(ncenter, ns, plan.nslot, ncs)
    VP = torch.einsum("sbxk,cskj->scxjb", plan.M1, Gp).reshape(ns * ncenter, 3 * ncs, plan.nbd)
    VQ = torch.einsum("sbk,cskj->scjb", plan.A, Gp).reshape(ns * ncenter, ncs, plan.nbm)
    YP = torch.bmm(VP, Pf.view(ns * ncenter, plan.nbd, nn)).view(ns, ncenter, 3, ncs, nn)
    YQ = torch.bmm(VQ, Q.view(ns * ncenter, plan.nbm, nn)).view(ns, ncenter, 1, ncs, nn)
    del Pf, Q
    dd = (2.0 * dT).view(3, ncenter, nn).transpose(0, 1)[None, :, :, None, :]
    dF = torch.addcmul(YP, dd, YQ)  # (ns, nc, 3, ncs, nn)
    del YP, YQ
    dF = dF.permute(1, 4, 3, 0, 2).reshape(N, ncs * ns, 3)  # (c, n, j, s, x)
    if not plan.col_identity:
        dF = dF.index_select(1, plan.col_flat)
    out = torch.sparse.mm(pair_agg, dF.reshape(N, -1)).view(-1, plan.ncol, 3)
    return fp, out


def _features(plan: _Plan, mu: torch.Tensor, need_grad: bool):
    """Features (nc, ncol) from component sums (nc, ns*nslot); with ``need_grad`` also dF/dmu (nc, ncc)."""
    mcc = mu if plan.cc_identity else mu[:, plan.cc_fi]
    sq = (mcc * mcc * plan.cc_w) @ plan.S  # sum_c w mu^2 per column
    lin = (mcc * plan.cc_w) @ plan.S
    kind = plan.kind
    norm = sq.clamp_min(0).sqrt()
    keep = norm > plan.thr  # gmp: F <= 1e-8 -> 0; ordernorm: F < 1e-2 -> 0
    keep = torch.where(plan.thr == ORDERNORM_THRESHOLD, norm >= plan.thr, keep)
    normed = torch.where(keep, norm, torch.zeros_like(norm))
    fp = torch.where(kind == KIND_SIGNED, lin, torch.where(kind == KIND_NORM, normed, sq))
    if not need_grad:
        return fp, None
    kcc = plan.kind_cc
    col = plan.cc_col
    inv = torch.where(keep, 1.0 / torch.where(keep, norm, torch.ones_like(norm)), torch.zeros_like(norm))
    g_norm = mcc * plan.cc_w * inv[:, col]
    g_sq = 2.0 * mcc * plan.cc_w
    G = torch.where(kcc == KIND_SIGNED, torch.ones_like(mcc), torch.where(kcc == KIND_NORM, g_norm, g_sq))
    return fp, G


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def _resolve_device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MfhpoError(f"device {device!r} requested but CUDA is not available")
    return dev


def _element_indices(atoms: Atoms, plan: _Plan, where: str) -> np.ndarray:
    lookup = {el: k for k, el in enumerate(plan.elements)}
    syms = atoms.get_chemical_symbols()
    try:
        return np.fromiter((lookup[s] for s in syms), dtype=np.int64, count=len(syms))
    except KeyError:
        missing = sorted(set(syms) - set(lookup))
        raise MfhpoError(f"{where}: element(s) {', '.join(missing)} have no density in the GMP setting") from None


def _check_atoms(atoms: Atoms, where: str) -> None:
    if len(atoms) == 0:
        raise MfhpoError(f"{where}: has no atoms")
    if not np.all(np.isfinite(atoms.positions)):
        raise MfhpoError(f"{where}: positions contain NaN or inf")
    if np.any(atoms.pbc):
        cell = np.asarray(atoms.cell)
        if not np.all(np.isfinite(cell)):
            raise MfhpoError(f"{where}: cell contains NaN or inf")


def featurize(atoms: Atoms, setting: GMPSetting, derivatives: bool = False, dtype: torch.dtype = torch.float64,
              device="cpu") -> Features:
    """GMP fingerprints (and optionally their derivatives) of one structure."""
    return featurize_many([atoms], setting, derivatives=derivatives, dtype=dtype, device=device)[0]


def _chunk_mb(device: torch.device) -> float:
    """Size of the largest temporary per chunk. Small on CPU (stays in cache: the kernels are
    memory-bound), large on GPUs. Override with MFHPO_GMP_CHUNK_MB."""
    default = 256.0 if device.type == "cuda" else 3.0
    try:
        return float(os.environ.get("MFHPO_GMP_CHUNK_MB", default))
    except ValueError:
        return default


def featurize_many(images: Sequence[Atoms], setting: GMPSetting, derivatives: bool = False,
                   dtype: torch.dtype = torch.float64, device="cpu", cache=None, progress: bool = False,
                   source: str = "images") -> list[Features]:
    """Fingerprints of many structures; small structures are batched into chunks of pairs.

    With ``cache`` (:class:`~mfhpo.gmp.cache.FeatureCache`) results are looked up first and
    computed ones are stored. Results live on ``device`` in ``dtype``.
    """
    if isinstance(dtype, str):
        dtype = {"float64": torch.float64, "float32": torch.float32}.get(dtype)
        if dtype is None:
            raise MfhpoError("dtype must be float64 or float32")
    dev = _resolve_device(device)
    images = list(images)
    results: list[Optional[Features]] = [None] * len(images)
    todo = list(range(len(images)))
    if cache is not None:
        todo = []
        for k, atoms in enumerate(images):
            f = cache.get(setting, atoms, dtype, derivatives)
            if f is None:
                todo.append(k)
            else:
                results[k] = f.to(device=dev)
    if todo:
        # always computed in float64 (density fits mix large terms of opposite sign), then cast
        plan = _plan(setting, dev, torch.float64)
        budget = max(1, int(_chunk_mb(dev) * 2 ** 20 / (8 * plan.widest(derivatives))))
        bar = _Progress(len(todo), progress)
        try:
            for idx, feats in _run(plan, images, todo, derivatives, budget, source):
                if dtype != torch.float64:
                    feats = feats.to(dtype=dtype)
                results[idx] = feats
                if cache is not None:
                    cache.put(setting, images[idx], dtype, derivatives, feats)
                bar.advance()
        finally:
            bar.close()
    return results  # type: ignore[return-value]


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.p = None
        if enabled:
            from rich.progress import Progress

            self.p = Progress(transient=False)
            self.p.start()
            self.task = self.p.add_task("featurizing", total=total)

    def advance(self):
        if self.p is not None:
            self.p.advance(self.task)

    def close(self):
        if self.p is not None:
            self.p.stop()


def _run(plan: _Plan, images, todo, derivatives: bool, budget: int, source: str):
    """Yield (image index, Features) in order, computing chunk by chunk."""
    dev, dt = plan.device, plan.dtype
    pending: list = []  # pieces: (img, nb, elem, c0, c1)
    npend = 0
    partial: dict = {}

    def flush():
        nonlocal pending, npend
        if not pending:
            return []
        out = _run_chunk(plan, pending, derivatives)
        done = []
        for (img, nb, elem, c0, c1), (fp, dfp) in zip(pending, out):
            partial.setdefault(img, []).append((fp, dfp))
            if c1 == nb.natoms:
                parts = partial.pop(img)
                fp_all = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
                if derivatives:
                    dfp_all = torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
                    feats = Features(fp_all, torch.from_numpy(nb.pair_i).to(dev), torch.from_numpy(nb.pair_j).to(dev), dfp_all)
                else:
                    feats = Features(fp_all)
                done.append((img, feats))
        pending, npend = [], 0
        return done

    for idx in todo:
        atoms = images[idx]
        where = f"{source}: frame {idx}"
        _check_atoms(atoms, where)
        elem = _element_indices(atoms, plan, where)
        nb = neighbor_pairs(atoms, plan.cutoff)
        n = nb.natoms
        c0 = 0
        while c0 < n:
            room = budget - npend
            # largest c1 such that the pairs of centres c0..c1 fit (at least one centre)
            c1 = int(np.searchsorted(nb.center_start, nb.center_start[c0] + room, side="right")) - 1
            c1 = min(max(c1, c0 + 1), n)
            if c1 == c0 + 1 and nb.center_start[c1] - nb.center_start[c0] > room and pending:
                yield from flush()
                continue
            pending.append((idx, nb, elem, c0, c1))
            npend += int(nb.center_start[c1] - nb.center_start[c0])
            c0 = c1
            if npend >= budget:
                yield from flush()
    yield from flush()


def _run_chunk(plan: _Plan, pieces, derivatives: bool):
    """Concatenate pieces (structure, centre range) into one pair list, compute, split again."""
    ds, cis, els, ups, up_self = [], [], [], [], []
    coff = 0
    uoff = 0
    meta = []
    for (img, nb, elem, c0, c1) in pieces:
        p0, p1 = int(nb.center_start[c0]), int(nb.center_start[c1])
        ds.append(nb.d[p0:p1])
        cis.append(nb.i[p0:p1] - c0 + coff)
        els.append(elem[nb.j[p0:p1]])
        if derivatives:
            u0, u1 = int(nb.upair[p0]), int(nb.upair[p1 - 1]) + 1
            ups.append(nb.upair[p0:p1] - u0 + uoff)
            up_self.append(nb.self_upair[c0:c1] - u0 + uoff)
            meta.append((coff, c1 - c0, uoff, u1 - u0))
            uoff += u1 - u0
        else:
            meta.append((coff, c1 - c0, 0, 0))
        coff += c1 - c0
    d = np.concatenate(ds)
    ci = np.concatenate(cis)
    el = np.concatenate(els)
    order = np.argsort(el, kind="stable")
    counts = np.bincount(el, minlength=len(plan.elements)).tolist()
    npair = len(ci)
    dev, dt = plan.device, plan.dtype
    d_sorted = torch.from_numpy(d[order]).to(device=dev, dtype=dt)
    # pairs are sorted by centre: padded row = c * nn + rank within the centre
    starts = np.searchsorted(ci, np.arange(coff + 1))
    nn = int(np.diff(starts).max())
    prow = ci * nn + (np.arange(npair) - starts[ci])
    d_pad = np.zeros((coff * nn, 3))
    d_pad[prow] = d
    pair_agg = None
    if derivatives:
        up = np.concatenate(ups)
        us = np.concatenate(up_self)
        pair_agg = _csr(np.concatenate([up, us[ci]]), np.concatenate([prow, prow]),
                        np.concatenate([np.ones(npair), -np.ones(npair)]), (uoff, coff * nn), dev, dt)
    fp, dfp = _compute(plan, d_sorted, counts, torch.from_numpy(prow[order]).to(dev),
                       torch.from_numpy(d_pad).to(device=dev, dtype=dt), coff, nn, pair_agg)
    out = []
    single = len(meta) == 1
    for (c_off, nc, u_off, nu) in meta:
        f = fp if single else fp[c_off:c_off + nc].clone()
        g = None if dfp is None else (dfp if single else dfp[u_off:u_off + nu].clone())
        out.append((f, g))
    return out
