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
3. Layout: centres of a chunk are grouped by neighbour count and each centre's pairs are padded to
   the group's largest count (<= 20 % slack), so per-centre sums are batched GEMMs. Without
   derivatives, ``X_c = D_c^T R_c`` (monomials x radial functions, one ``bmm``) times a constant
   matrix gives the components.
4. Derivatives are analytic: ``d/dd [d^m R(|d|^2)] = (grad d^m) R + 2 d d^m R'``. The basis
   products ``d^m R`` and ``d^m R'`` are formed feature-major (pair index innermost); the chain rule
   to the features is folded into per-(centre, sigma) matrices and applied with one ``bmm``; one 2-D
   transpose gives (pair, feature, xyz); a gather (first image of each (i, j)), an ``index_add_``
   (further periodic images) and a per-centre sum (``-`` for the centre i) give the sparse layout.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from ase import Atoms

from mfhpo.errors import MfhpoError
from mfhpo.gmp import mcsh
from mfhpo.gmp.neighbors import neighbor_pairs
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
        # Amat[(mono, s, r), (s, slot)]: mu from the per-centre sums X = sum_pairs d^mono R_(s,r)
        nmono = len(monos)
        Amat = np.zeros((nmono, ns, nr, ns, nslot))
        for ri, g, b0, b1 in self.mu_blocks:
            for k in range(b1 - b0):
                Amat[self.deg_off[g] + k, np.arange(ns), ri, np.arange(ns), :] = A[:, b0 + k, :]
        self.Amat = torch.tensor(Amat.reshape(nmono * ns * nr, ns * nslot), **t)

        # radial tables per element: eta (K, ns), W[k, s, part, s, r] = [R | dR/d(d^2)] weights
        if ordernorm:
            amp = [(sg * math.sqrt(2 * math.pi)) ** -3 for sg in sigmas]
        else:
            amp = [1.0 / (sg * math.sqrt(2 * math.pi)) for sg in sigmas]
        self.elements = list(s.elements)
        self.neg_eta_b, self.Wb = [], []
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
            # per-sigma blocks (W is block diagonal in sigma): -eta (ns, 1, K), Wb (ns, K, 2*nr)
            self.neg_eta_b.append(torch.tensor(-eta.T[:, None, :].copy(), **t))
            Wb = np.stack([W[:, si, :, si, :].reshape(K, 2 * nr) for si in range(ns)])
            self.Wb.append(torch.tensor(Wb, **t))
            
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


def _radial(plan: _Plan, d: torch.Tensor, elem_counts: list[int], deriv: bool) -> torch.Tensor:
    """Radial functions of pairs sorted by neighbour element: (np, ns, nr) R, or with ``deriv``
    (np, ns, 2, nr) = [R | R' = dR/d(|d|^2)] per sigma.

    One exp per (pair, density Gaussian, sigma); the sums over Gaussians are one small batched GEMM
    per neighbour element (batch = sigma: the weights are block diagonal in sigma)."""
    ns, nr = plan.ns, plan.nr
    npair = d.shape[0]
    dsq = (d * d).sum(1)
    w = nr * (2 if deriv else 1)
    RR = torch.empty((npair, ns, w), dtype=plan.dtype, device=plan.device)
    RRs = RR.permute(1, 0, 2)  # (ns, np, w) view: bmm writes each sigma's block in place
    off = 0
    for e, cnt in enumerate(elem_counts):
        if cnt == 0:
            continue
        sl = slice(off, off + cnt)
        E = torch.exp(plan.neg_eta_b[e] * dsq[None, sl, None])  # (ns, cnt, K)
        Wb = plan.Wb[e] if deriv else plan.Wb[e][:, :, :nr]
        torch.bmm(E, Wb, out=RRs[:, sl])
        off += cnt
    if deriv:
        RR = RR.view(npair, ns, 2, nr)
    if plan.cosine:
        rc = plan.cutoff
        r = dsq.sqrt()
        x = (math.pi / rc) * r
        fc = 0.5 * (torch.cos(x) + 1.0)
        R = RR[:, :, 0] if deriv else RR
        if deriv:
            # d fc / d(r^2) = fc'(r) / (2 r) = -(pi / (4 rc)) sin(x) / r ; limit at r = 0: -(pi/rc)^2 / 4
            pos = r > 0
            sinc = torch.where(pos, torch.sin(x) / torch.where(pos, r, torch.ones_like(r)),
                               torch.full_like(r, math.pi / rc))
            dfc = (-0.25 * math.pi / rc) * sinc
            RR[:, :, 1].mul_(fc[:, None, None]).add_(R * dfc[:, None, None])
        R.mul_(fc[:, None, None])
    return RR


def _monomials(plan: _Plan, d: torch.Tensor) -> torch.Tensor:
    """d^m for all monomials up to maxdeg, pair-major: d (N, 3) -> (N, nmono), degree-block order."""
    off = plan.deg_off
    Dm = torch.empty((d.shape[0], off[-1]), dtype=plan.dtype, device=plan.device)
    Dm[:, 0] = 1.0
    if plan.maxdeg >= 1:
        Dm[:, 1:4] = d
    for l in range(2, plan.maxdeg + 1):
        p0, p1 = off[l - 1], off[l]
        o = off[l]
        n_prev = p1 - p0
        torch.mul(Dm[:, p0:p1], d[:, 0:1], out=Dm[:, o:o + n_prev])
        torch.mul(Dm[:, p1 - l:p1], d[:, 1:2], out=Dm[:, o + n_prev:o + n_prev + l])
        torch.mul(Dm[:, p1 - 1:p1], d[:, 2:3], out=Dm[:, o + n_prev + l:o + n_prev + l + 1])
    return Dm


def _monomials_fm(plan: _Plan, dT: torch.Tensor) -> torch.Tensor:
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


def _compute(plan: _Plan, d_sorted: torch.Tensor, elem_counts: list[int], prow: torch.Tensor,
             d_pad: torch.Tensor, groups, ncenter: int, agg):
    """Features (and derivatives) of the centres of one chunk, padded per centre.

    Centres come in ``groups`` ``(row0, nc, nn, centres)`` of similar neighbour counts: row
    ``row0 + c * nn + k`` of ``d_pad`` (N, 3) is the k-th pair of the group's c-th centre (chunk
    index ``centres[c]``); unused rows are zeros and their radial functions are zero, so padding
    contributes nothing. ``d_sorted`` holds the real pairs sorted by neighbour element and ``prow``
    their padded rows. ``agg`` (derivatives only): (first, dup_rows, dup_up, self_up) index tensors
    that fold padded pair rows into the unique (i, j) list. Returns fp (ncenter, ncol) and dfp
    (nupair, ncol, 3) or None.
    """
    deriv = agg is not None
    ns, nr, ncs = plan.ns, plan.nr, plan.ncs
    N = d_pad.shape[0]
    RR = _radial(plan, d_sorted, elem_counts, deriv)
    RR = RR.reshape(RR.shape[0], -1)  # (np, W): (s, r) or (s, part, r)
    W = RR.shape[1]
    Rpad = torch.zeros((N, W), dtype=plan.dtype, device=plan.device)
    Rpad.index_copy_(0, prow, RR)
    del RR
    nmono = plan.deg_off[-1]
    fp = torch.empty((ncenter, plan.ncol), dtype=plan.dtype, device=plan.device)
    if not deriv:
        for row0, nc, nn, cids in groups:
            rows = slice(row0, row0 + nc * nn)
            Dm = _monomials(plan, d_pad[rows])  # (nc*nn, nmono)
            # X[c] = Dm_c^T R_c: all (monomial, radial) sums per centre in one batched GEMM
            X = torch.bmm(Dm.view(nc, nn, nmono).transpose(1, 2), Rpad[rows].view(nc, nn, W))
            mu = X.view(nc, nmono * W) @ plan.Amat  # (nc, ns*nslot)
            f, _ = _features(plan, mu, need_grad=False)
            fp[cids] = f
        return fp, None
    nbd, nbm = plan.nbd, plan.nbm
    nb = nbd + nbm
    off = plan.deg_off
    ncf = plan.ncol if plan.col_identity else ncs * ns
    Fall = torch.empty((N, ncf * 3), dtype=plan.dtype, device=plan.device)
    selfs = []
    for row0, nc, nn, cids in groups:
        rows = slice(row0, row0 + nc * nn)
        Ng = nc * nn
        # feature-major from here (pair index innermost: long vectorised inner loops)
        RT = Rpad[rows].t().contiguous().view(ns, 2, nr, nc, nn).permute(1, 3, 0, 2, 4)  # (2, nc, ns, nr, nn)
        dT = d_pad[rows].t().contiguous()
        DmT = _monomials_fm(plan, dT).view(nmono, nc, nn).transpose(0, 1)[:, None]  # (nc, 1, nmono, nn)
        # per-pair basis Z[c, s, :, k] = [d^m R_(r,s) (derivative basis) | d^m R'_(r,s) (mu basis)]
        Z = torch.empty((nc, ns, nb, nn), dtype=plan.dtype, device=plan.device)
        for ri, g, b0, b1 in plan.der_blocks:
            torch.mul(DmT[:, :, off[g]:off[g + 1]], RT[0, :, :, ri:ri + 1], out=Z[:, :, b0:b1])
        for ri, g, b0, b1 in plan.mu_blocks:
            torch.mul(DmT[:, :, off[g]:off[g + 1]], RT[1, :, :, ri:ri + 1], out=Z[:, :, nbd + b0:nbd + b1])
        del RT, DmT
        mu = torch.bmm(Z[:, :, :nbm].sum(-1).transpose(0, 1), plan.A).transpose(0, 1).reshape(nc, ns * plan.nslot)
        f, G = _features(plan, mu, need_grad=True)  # G (nc, ncc) = dF_col / dmu_cc
        fp[cids] = f
        # per-centre chain-rule matrices: Gp[c, s, slot, j] = dF_(s,j) / dmu_(s,slot)
        Gp = (G @ plan.Scc).view(nc, ns, plan.nslot, ncs)
        # one batched GEMM per (centre, sigma): [YP; YQ] = [[VP, 0], [0, VQ]] @ Z
        V = torch.zeros((nc, ns, 4 * ncs, nb), dtype=plan.dtype, device=plan.device)
        V[:, :, :3 * ncs, :nbd] = torch.einsum("sbxk,cskj->csjxb", plan.M1, Gp).reshape(nc, ns, ncs * 3, nbd)
        V[:, :, 3 * ncs:, nbd:] = torch.einsum("sbk,cskj->csjb", plan.A, Gp)
        Y = torch.bmm(V.view(nc * ns, 4 * ncs, nb), Z.view(nc * ns, nb, nn)).view(nc, ns, 4 * ncs, nn)
        del Z, V
        YP = Y[:, :, :3 * ncs].view(nc, ns, ncs, 3, nn)
        YQ = Y[:, :, 3 * ncs:].view(nc, ns, ncs, 1, nn)
        # dF = YP + 2 d_x YQ, then to pair-major with column layout (j, s) (as plan.col_flat expects)
        FT = torch.empty((ncs, ns, 3, nc, nn), dtype=plan.dtype, device=plan.device)
        torch.addcmul(YP, dT.view(3, nc, nn).transpose(0, 1)[:, None, None], YQ, value=2.0,
                      out=FT.permute(3, 1, 0, 2, 4))
        del Y, YP, YQ
        Fg = Fall[rows]
        Fg.copy_(FT.view(ncs * ns * 3, Ng).t())  # plain 2-D transpose (blocked copy kernel)
        del FT
        selfs.append((cids, Fg.view(nc, nn, -1).sum(1)))
    first, dup_rows, dup_up, self_up = agg
    out = Fall.index_select(0, first)
    if dup_rows is not None:
        out.index_add_(0, dup_up, Fall.index_select(0, dup_rows))
    for cids, sums in selfs:
        out.index_add_(0, self_up[cids], sums, alpha=-1.0)
    if not plan.col_identity:
        out = out.view(-1, ncs * ns, 3).index_select(1, plan.col_flat)
    return fp, out.view(-1, plan.ncol, 3)


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
    """Size of the largest temporary per chunk. Small on CPU (temporaries of one centre group stay
    in cache; 8 MB measured best on OC20 among 3/4/8/12/16), large on GPUs. Override with
    MFHPO_GMP_CHUNK_MB."""
    default = 256.0 if device.type == "cuda" else 8.0
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
        nb = neighbor_pairs(atoms, plan.cutoff, unique=derivatives)
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


PAD_SLACK = 0.2


def _group_centres(cnt: np.ndarray):
    """Groups of centres with similar pair counts: [(row0, ncentre, nn, centres)], row base per centre.

    Centres sorted by count (descending) are cut greedily where the count drops below
    ``(1 - PAD_SLACK) * nn`` of the group's first (largest) count."""
    order = np.argsort(-cnt, kind="stable")
    sc = cnt[order]
    groups, row_base = [], np.empty(len(cnt), dtype=np.int64)
    k, row0 = 0, 0
    while k < len(sc):
        nn = int(sc[k])
        k1 = int(np.searchsorted(-sc, -(1.0 - PAD_SLACK) * nn, side="right"))
        k1 = max(k1, k + 1)
        cs = order[k:k1]
        row_base[cs] = row0 + nn * np.arange(k1 - k)
        groups.append((row0, k1 - k, nn, cs))
        row0 += nn * (k1 - k)
        k = k1
    return groups, row_base


def _run_chunk(plan: _Plan, pieces, derivatives: bool):
    """Concatenate pieces (structure, centre range) into one pair list, compute, split again."""
    ds, cis, els, ups, up_self, firsts = [], [], [], [], [], []
    coff = 0
    uoff = 0
    meta = []
    for (img, nb, elem, c0, c1) in pieces:
        p0, p1 = int(nb.center_start[c0]), int(nb.center_start[c1])
        ds.append(nb.d[p0:p1])
        cis.append(nb.i[p0:p1] - c0 + coff)
        els.append(elem[nb.j[p0:p1]])
        if derivatives:
            u0, u1 = int(nb.ucenter_start[c0]), int(nb.ucenter_start[c1])
            ups.append(nb.upair[p0:p1] - u0 + uoff)
            up_self.append(nb.self_upair[c0:c1] - u0 + uoff)
            meta.append((coff, c1 - c0, uoff, u1 - u0))
            uoff += u1 - u0
        else:
            meta.append((coff, c1 - c0, 0, 0))
        coff += c1 - c0
    d = np.concatenate(ds) if len(ds) > 1 else ds[0]
    ci = np.concatenate(cis) if len(cis) > 1 else cis[0]
    el = np.concatenate(els) if len(els) > 1 else els[0]
    order = np.argsort(el, kind="stable")
    counts = np.bincount(el, minlength=len(plan.elements)).tolist()
    npair = len(ci)
    dev, dt = plan.device, plan.dtype
    # pairs are sorted by centre; centres are grouped by neighbour count (padding to the group's
    # largest count wastes at most PAD_SLACK); padded row = row0 + c * nn + rank within the centre
    starts = np.searchsorted(ci, np.arange(coff + 1))
    cnt = np.diff(starts)
    groups, row_base = _group_centres(cnt)
    prow = row_base[ci] + (np.arange(npair) - starts[ci])
    nrows = groups[-1][0] + groups[-1][1] * groups[-1][2]
    d_pad = np.zeros((nrows, 3))
    d_pad[prow] = d
    tgroups = [(r0, nc, nn, torch.from_numpy(c).to(dev)) for r0, nc, nn, c in groups]
    agg = None
    if derivatives:
        up = np.concatenate(ups) if len(ups) > 1 else ups[0]
        us = np.concatenate(up_self) if len(up_self) > 1 else up_self[0]
        # first pair of each unique (i, j) (earliest index wins: assign in reverse), the rest are images
        first = np.empty(uoff, dtype=np.int64)
        first[up[::-1]] = np.arange(npair - 1, -1, -1)
        dup = first[up] != np.arange(npair)
        tt = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)
        agg = (tt(prow[first]), tt(prow[dup]) if dup.any() else None, tt(up[dup]) if dup.any() else None, tt(us))
    fp, dfp = _compute(plan, torch.from_numpy(d[order]).to(device=dev, dtype=dt), counts,
                       torch.from_numpy(prow[order]).to(dev),
                       torch.from_numpy(d_pad).to(device=dev, dtype=dt), tgroups, coff, agg)
    out = []
    single = len(meta) == 1
    for (c_off, nc, u_off, nu) in meta:
        f = fp if single else fp[c_off:c_off + nc].clone()
        g = None if dfp is None else (dfp if single else dfp[u_off:u_off + nu].clone())
        out.append((f, g))
    return out
