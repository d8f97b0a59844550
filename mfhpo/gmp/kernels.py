"""GMP on one chunk of centres (pieces of one or more structures): layout, radial functions, component
sums, features and analytic derivatives. The maths and the tables are in :mod:`mfhpo.gmp.plan`.

Layout of a chunk (all per-pair arrays are *feature-major*: pair index innermost, so elementwise
kernels run over long contiguous rows):

* Self pairs (the centre itself, ``d = 0``) are not in the pair list. They only add a per-element
  constant to ``mu`` (``plan.mu_self``); their derivative is zero (``d`` does not depend on the
  positions), and the (i, i) entries of the sparse derivatives are filled by the centre sums below.
* Centres are grouped by neighbour count; each centre's pairs are padded to its group's largest
  count (<= ``PAD_SLACK`` waste), so per-centre sums and per-centre chain-rule matrices are batched
  GEMMs. In the blocked layout (``PAIR_ALIGN``, ``BLOCK``) each centre is padded to its own width
  instead and the GEMMs whose size grows with the chunk run in fixed-shape blocks, so a structure's
  features are bitwise the same whatever shares its chunk. Centres are numbered in group order
  inside the chunk (``gorder`` maps back). Padding columns have ``d = 0`` and ``R = 0``, so they
  contribute nothing.
* The radial functions are computed with pairs sorted by neighbour element (one GEMM over the
  element's Gaussians per element) and then gathered into the padded order.
* Derivatives per pair are formed per group, feature-major, into a chunk buffer that one 2-D
  transpose makes pair-major (columns (j, s, xyz)); the sparse output is a row gather of that
  buffer (first periodic image of each (i, j)) plus ``index_add_`` of the other images and of
  the centre sums.
* Large temporaries come from a :class:`Workspace` that lives for one ``featurize_many`` call,
  so they are not allocated (page-faulted and zeroed) anew for every chunk; only the results
  are new memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mfhpo.gmp.plan import KIND_NORM, KIND_SIGNED, Plan

PAD_SLACK = 0.2
# the "blocked" layout (FeaturizeOptions.layout): a centre's pairs padded to a multiple of PAIR_ALIGN
# columns (64 bytes in float64, so every centre's block starts equally aligned), and the GEMMs whose
# size grows with the chunk computed as GEMMs of exactly BLOCK rows (pairs, centres); a centre's
# features then do not depend on what else shares its chunk, to the bit (tests/test_gmp.py)
PAIR_ALIGN = 8
BLOCK = 48


class Workspace:
    """Scratch buffers reused from chunk to chunk, one per name (grown when needed).

    Large temporaries allocated afresh for every chunk come from the OS each time (the allocator
    returns big blocks on free), and every new page costs a page fault and zeroing, which on a
    busy machine is as slow as the arithmetic itself."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self.bufs: dict = {}

    def get(self, name: str, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or self.dtype
        n = math.prod(shape)
        buf = self.bufs.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype:
            buf = torch.empty(max(n, 1) * 5 // 4 + 64, dtype=dtype, device=self.device)
            self.bufs[name] = buf
        return buf[:n].view(shape)


@dataclass
class Chunk:
    """Index tables of one chunk (see the module docstring); tensors live on the plan's device."""

    ncentre: int
    npad: int  # padded pair columns
    groups: list  # (k0, nc, nn, col0): centres k0..k0+nc (group order) own columns col0 + c*nn + rank
    gorder: torch.Tensor  # (ncentre,) chunk centre index of each group-ordered centre
    elc: torch.Tensor  # (ncentre,) element index of each group-ordered centre
    dT: torch.Tensor  # (3, npad) displacements d = r_j + T - r_i, padded
    dsq_sorted: torch.Tensor  # (nsorted,) |d|^2 of the pairs sorted by neighbour element (padded runs: 0)
    elem_runs: list  # (element, start, count) of the element-sorted pairs
    src: torch.Tensor  # (npad,) element-sorted index of each padded column (npair: padding)
    meta: list  # per piece: (centre offset, ncentre, unique-pair offset, nunique)
    block: int  # rows of the fixed-shape GEMMs (blocked layout); 0: GEMMs of the chunk's size
    # derivatives only: unique (i, j) pairs of the chunk
    nupair: int = 0
    first_col: torch.Tensor | None = None  # (nupair,) column of the first pair of each (i, j); npad: none
    dup_cols: torch.Tensor | None = None  # columns of the further periodic images
    dup_up: torch.Tensor | None = None  # their unique-pair index
    self_up: torch.Tensor | None = None  # (ncentre,) unique index of (i, i), group order


def _columns(n: int, order: np.ndarray, bounds: list, width: np.ndarray):
    """Groups ``order[k:k1]`` of centres for ``(k, k1)`` in ``bounds``, each centre padded to
    ``width[k]`` columns: (order, [(k0, nc, nn, col0)], column base per centre)."""
    groups, col_base, col0 = [], np.empty(n, dtype=np.int64), 0
    for k, k1 in bounds:
        nn = int(width[k])
        col_base[order[k:k1]] = col0 + nn * np.arange(k1 - k)
        groups.append((k, k1 - k, nn, col0))
        col0 += nn * (k1 - k)
    return order, groups, col_base


def _aligned_groups(cnt: np.ndarray, align: int):
    """Each centre padded to its own width, its pair count rounded up to a multiple of ``align``;
    centres of equal width form a group: (order, [(k0, nc, nn, col0)], column base per centre)."""
    width = -(-cnt // align) * align
    order = np.argsort(-width, kind="stable")
    sw = width[order]
    cuts = (np.flatnonzero(np.diff(sw)) + 1).tolist()
    return _columns(len(cnt), order, list(zip([0] + cuts, cuts + [len(sw)])), sw)


def _group_centres(cnt: np.ndarray, align: int = 0):
    """Centres sorted by pair count (descending), cut greedily where the count drops below
    ``(1 - PAD_SLACK)`` of the group's largest: (order, [(k0, nc, nn, col0)], column base per centre).
    ``align`` > 0: :func:`_aligned_groups` instead."""
    if align:
        return _aligned_groups(cnt, align)
    order = np.argsort(-cnt, kind="stable")
    sc = cnt[order]
    bounds, k = [], 0
    while k < len(sc):
        nn = int(sc[k])
        k1 = max(int(np.searchsorted(-sc, -(1.0 - PAD_SLACK) * nn, side="right")), k + 1)
        if nn == 0:
            k1 = len(sc)  # centres without neighbours: one group, no columns
        bounds.append((k, k1))
        k = k1
    return _columns(len(cnt), order, bounds, sc)


def _cat(parts: list) -> np.ndarray:
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def prepare_chunk(plan: Plan, pieces, derivatives: bool, blocked: bool = False) -> Chunk:
    """Index tables for ``pieces`` = [(image index, NeighborPairs, element indices, c0, c1)];
    ``blocked``: the blocked layout (module constants PAIR_ALIGN, BLOCK), else greedy groups."""
    block = BLOCK if blocked else 0
    ds, dsqs, cis, els, elcs, ups, uss, meta = [], [], [], [], [], [], [], []
    coff = uoff = 0
    for (_, nb, elem, c0, c1) in pieces:
        p0, p1 = int(nb.center_start[c0]), int(nb.center_start[c1])
        ds.append(nb.d[p0:p1])
        dsqs.append(nb.dsq[p0:p1])
        cis.append(nb.i[p0:p1] - (c0 - coff))
        els.append(elem[nb.j[p0:p1]])
        elcs.append(elem[c0:c1])
        nu = 0
        if derivatives:
            u0, u1 = int(nb.ucenter_start[c0]), int(nb.ucenter_start[c1])
            ups.append(nb.upair[p0:p1] - (u0 - uoff))
            uss.append(nb.self_upair[c0:c1] - (u0 - uoff))
            nu = u1 - u0
        meta.append((coff, c1 - c0, uoff, nu))
        coff += c1 - c0
        uoff += nu
    d, dsq, ci, el, elc = _cat(ds), _cat(dsqs), _cat(cis), _cat(els), _cat(elcs)
    npair = len(ci)
    cnt = np.bincount(ci, minlength=coff)
    starts = np.concatenate([[0], np.cumsum(cnt)])
    order, groups, col_base = _group_centres(cnt, PAIR_ALIGN if blocked else 0)
    col = col_base[ci] + (np.arange(npair) - starts[ci])  # padded column of every pair
    npad = groups[-1][3] + groups[-1][1] * groups[-1][2]
    dT = np.zeros((3, npad))
    dT[:, col] = d.T
    eorder = np.argsort(el.astype(np.int16), kind="stable")  # 16-bit keys: radix sort
    ecount = np.bincount(el, minlength=len(plan.elements))
    # element runs of the sorted pairs; blocked: each run zero-padded to whole blocks (radial sums in
    # GEMMs of BLOCK pairs), the padding column after the last run
    width = -(-ecount // block) * block if block else ecount
    estart = np.concatenate([[0], np.cumsum(width)])
    runs = [(e, int(estart[e]), int(width[e])) for e in np.flatnonzero(ecount)]
    nsorted = int(estart[-1])
    pos = np.arange(npair) - np.repeat(np.cumsum(ecount) - ecount, ecount) + np.repeat(estart[:-1], ecount)
    src = np.full(npad, nsorted, dtype=np.int64)
    src[col[eorder]] = pos
    dsq_sorted = np.zeros(nsorted)
    dsq_sorted[pos] = dsq[eorder]
    dev = plan.device

    def tt(a, dtype=None):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=dev, dtype=dtype)

    chunk = Chunk(coff, npad, groups, tt(order), tt(elc[order]), tt(dT, plan.dtype), tt(dsq_sorted, plan.dtype),
                  runs, tt(src), meta, block)
    if derivatives:
        up, us = _cat(ups), _cat(uss)
        first = np.full(uoff, npad, dtype=np.int64)
        first[up[::-1]] = col[::-1]  # earliest pair of each (i, j) wins
        dup = first[up] != col
        chunk.nupair = uoff
        chunk.first_col = tt(first)
        if dup.any():
            chunk.dup_cols, chunk.dup_up = tt(col[dup]), tt(up[dup])
        chunk.self_up = tt(us[order])
    return chunk


# --------------------------------------------------------------------------------------------
# per-pair quantities
# --------------------------------------------------------------------------------------------


def radial(plan: Plan, chunk: Chunk, deriv: bool, ws: Workspace) -> torch.Tensor:
    """Radial functions in padded order, part-major then radial-major: (P, nr, ns, npad) with P = 2
    ([R, R']) when ``deriv`` else 1 (radial-major: the radial functions of one degree are one
    contiguous block of rows).

    One exp per (pair, density Gaussian, sigma); the sums over Gaussians are one batched GEMM per
    neighbour element (batch = sigma), written feature-major into the element-sorted buffer; the
    gather into the padded layout also reorders (sigma, radial) to (radial, sigma)."""
    ns, nr = plan.ns, plan.nr
    P = 2 if deriv else 1
    dsq = chunk.dsq_sorted
    npair = dsq.shape[0]
    Rs = ws.get("Rs", (P, ns, nr, npair + 1))
    Rs[..., npair] = 0.0  # the padding columns gather this one
    for e, p0, cnt in chunk.elem_runs:
        eta = plan.neg_eta[e]  # (ns, K, 1)
        if chunk.block:
            _radial_blocks(plan, e, dsq[p0:p0 + cnt], Rs[..., p0:p0 + cnt], chunk.block, ws)
            continue
        E = ws.get("E", (ns, eta.shape[1], cnt))
        torch.exp(torch.mul(eta, dsq[p0:p0 + cnt], out=E), out=E)
        for part in range(P):
            torch.bmm(plan.WT[e][:, part * nr:(part + 1) * nr], E, out=Rs[part, :, :, p0:p0 + cnt])
    if plan.cosine:
        _apply_cosine(plan, Rs[..., :npair], dsq, deriv)
    R = ws.get("R", (P, nr, ns, chunk.npad))
    torch.gather(Rs.transpose(1, 2), 3, chunk.src.expand(P, nr, ns, -1), out=R)
    return R


def _radial_blocks(plan: Plan, e: int, dsq: torch.Tensor, out: torch.Tensor, block: int, ws: Workspace) -> None:
    """The radial sums of one element run in GEMMs of exactly ``block`` pairs each (batch = sigma x
    block), so that a pair's value does not depend on how many pairs the run holds; ``out`` (P, ns,
    nr, cnt) with cnt a multiple of ``block``."""
    P, ns, nr, cnt = out.shape
    nblk, K = cnt // block, plan.neg_eta[e].shape[1]
    E = ws.get("E", (ns, nblk, K, block))
    torch.mul(plan.neg_eta[e].view(ns, 1, K, 1), dsq.view(1, nblk, 1, block), out=E).exp_()
    for part in range(P):
        W = plan.WT[e][:, part * nr:(part + 1) * nr]  # (ns, nr, K)
        Rb = torch.bmm(W[:, None].expand(ns, nblk, nr, K).reshape(ns * nblk, nr, K), E.view(ns * nblk, K, block),
                       out=ws.get("Rb", (ns * nblk, nr, block)))
        out[part].view(ns, nr, nblk, block).copy_(Rb.view(ns, nblk, nr, block).transpose(1, 2))


def _apply_cosine(plan: Plan, Rv: torch.Tensor, dsq: torch.Tensor, deriv: bool) -> None:
    """Multiply by fc(r) = (cos(pi r / rc) + 1) / 2 in place (and the product rule for R')."""
    rc = plan.cutoff
    r = dsq.sqrt()
    x = (math.pi / rc) * r
    fc = 0.5 * (torch.cos(x) + 1.0)
    if deriv:
        # d fc / d(r^2) = fc'(r) / (2 r) = -(pi / (4 rc)) sin(x) / r ; limit at r = 0: -(pi/rc)^2 / 4
        pos = r > 0
        sinc = torch.where(pos, torch.sin(x) / torch.where(pos, r, torch.ones_like(r)),
                           torch.full_like(r, math.pi / rc))
        dfc = (-0.25 * math.pi / rc) * sinc
        Rv[1].mul_(fc).add_(Rv[0] * dfc)
    Rv[0].mul_(fc)


def monomials(plan: Plan, dT: torch.Tensor, ws: Workspace) -> torch.Tensor:
    """d^m for all monomials up to maxdeg, feature-major: dT (3, N) -> (nmono, N), degree-block order."""
    off = plan.deg_off
    Dm = ws.get("Dm", (off[-1], dT.shape[1]))
    Dm[0] = 1.0
    for deg in range(1, plan.maxdeg + 1):
        p0, p1, o = off[deg - 1], off[deg], off[deg]
        n_prev = p1 - p0
        torch.mul(Dm[p0:p1], dT[0:1], out=Dm[o:o + n_prev])
        torch.mul(Dm[p1 - deg:p1], dT[1:2], out=Dm[o + n_prev:o + n_prev + deg])
        torch.mul(Dm[p1 - 1:p1], dT[2:3], out=Dm[o + n_prev + deg:o + n_prev + deg + 1])
    return Dm


def _centre_view(t: torch.Tensor, c0: int, nc: int, nn: int) -> torch.Tensor:
    """Columns c0 .. c0 + nc*nn of a feature-major (..., npad) tensor as (nc, ..., nn)."""
    v = t[..., c0:c0 + nc * nn].view(t.shape[:-1] + (nc, nn))
    return v.movedim(-2, 0)


# --------------------------------------------------------------------------------------------
# component sums and features
# --------------------------------------------------------------------------------------------


def _mm(a: torch.Tensor, b: torch.Tensor, block: int) -> torch.Tensor:
    """``a @ b`` for (M, K) @ (K, N) or (B, M, K) @ (B, K, N); with ``block`` > 0 computed as GEMMs of
    exactly ``block`` rows (the last block zero-padded), so that a row's result does not depend on M
    or on where the row sits (BLAS kernels treat remainder rows differently)."""
    if not block:
        return a @ b
    flat = a.dim() == 2
    a3, b3 = (a[None], b[None]) if flat else (a, b)
    nbat, m, k = a3.shape
    nblk = -(-m // block)
    ap = a3.new_zeros((nbat, nblk * block, k))
    ap[:, :m] = a3
    bb = b3[:, None].expand(nbat, nblk, k, b3.shape[-1]).reshape(nbat * nblk, k, b3.shape[-1])
    out = torch.bmm(ap.view(nbat * nblk, block, k), bb).view(nbat, nblk * block, -1)[:, :m]
    return out[0] if flat else out


def component_sums(plan: Plan, chunk: Chunk, R: torch.Tensor, Dm: torch.Tensor) -> torch.Tensor:
    """mu (ncentre, ns*nslot) in group order. Small settings (``plan.csum_full``): per group one
    batched GEMM of all monomials with all radial functions, then the full constant map. Otherwise
    per monomial degree l and group of centres one batched GEMM sums over each centre's pairs the products of the degree-l monomials with the degree-l
    radial functions, X_l = D_l R_l^T (only products the components use); per sigma one GEMM with
    a constant table (plan.Xcoef) gives the components, plus the self term."""
    ns, nc = plan.ns, chunk.ncentre
    R0 = R[0].view(plan.nr * ns, -1)  # rows (radial, sigma)
    if plan.csum_full:  # small settings: all monomials x all radials, one GEMM per group
        X = torch.zeros((nc, plan.nmono, plan.nr * ns), dtype=plan.dtype, device=plan.device)
        for k0, ng, nn, c0 in chunk.groups:
            if nn:
                torch.bmm(_centre_view(Dm, c0, ng, nn), _centre_view(R0, c0, ng, nn).transpose(1, 2), out=X[k0:k0 + ng])
        if not chunk.block:
            return torch.addmm(plan.mu_self.index_select(0, chunk.elc), X.view(nc, -1), plan.Afull)
        return _mm(X.view(nc, -1), plan.Afull, chunk.block).add_(plan.mu_self.index_select(0, chunk.elc))
    X = torch.zeros((nc, plan.nx), dtype=plan.dtype, device=plan.device)  # blocks (l: mono, radial, sigma)
    off = plan.deg_off
    for l, ra, rb, x0, x1 in plan.x_blocks:
        Rl = R0[ra * ns:rb * ns]
        Xl = X[:, x0:x1].view(nc, off[l + 1] - off[l], (rb - ra) * ns)
        for k0, ng, nn, c0 in chunk.groups:
            if nn:
                torch.bmm(_centre_view(Dm[off[l]:off[l + 1]], c0, ng, nn), _centre_view(Rl, c0, ng, nn).transpose(1, 2),
                          out=Xl[k0:k0 + ng])
    # X columns (x, sigma) -> per sigma (ns, nc, nx / ns) @ (ns, nx / ns, nslot)
    Xs = X.view(nc, plan.nx // ns, ns).permute(2, 0, 1)
    mu = _mm(Xs, plan.Xcoef, chunk.block).transpose(0, 1).reshape(nc, ns * plan.nslot)
    return mu.add_(plan.mu_self.index_select(0, chunk.elc))


def features(plan: Plan, mu: torch.Tensor, need_grad: bool, block: int = 0):
    """Features (nc, ncol) from component sums (nc, ns*nslot); with ``need_grad`` also dF/dmu (nc, ncc);
    ``block``: the sums over components in GEMMs of that many centres (:func:`_mm`)."""
    mcc = mu if plan.cc_identity else mu[:, plan.cc_fi]
    wm = mcc * plan.cc_w
    sq = _mm(wm * mcc, plan.S, block)  # sum_c w mu^2 per column
    lin = _mm(wm, plan.S, block)
    kind = plan.kind
    norm = sq.clamp_min(0).sqrt()
    # gmp: F <= 1e-8 -> 0; ordernorm: F < 1e-2 -> 0
    keep = torch.where(plan.is_ordernorm_thr, norm >= plan.thr, norm > plan.thr)
    normed = torch.where(keep, norm, torch.zeros_like(norm))
    fp = torch.where(kind == KIND_SIGNED, lin, torch.where(kind == KIND_NORM, normed, sq))
    if not need_grad:
        return fp, None
    kcc = plan.kind_cc
    inv = torch.where(keep, 1.0 / torch.where(keep, norm, torch.ones_like(norm)), torch.zeros_like(norm))
    g_norm = wm * inv[:, plan.cc_col]
    G = torch.where(kcc == KIND_SIGNED, torch.ones_like(mcc), torch.where(kcc == KIND_NORM, g_norm, 2.0 * wm))
    return fp, G


# --------------------------------------------------------------------------------------------
# derivatives
# --------------------------------------------------------------------------------------------


def _chain_inputs(plan: Plan, G: torch.Tensor) -> torch.Tensor:
    """dF/dmu entries per (pad slot t, sigma, centre, column j): (tmax, ns, nc, ncs, 1), the
    factors of the chain rule (:func:`_chain`)."""
    nc, ns, ncs = G.shape[0], plan.ns, plan.ncs
    Gt = torch.cat([G.t(), G.new_zeros((1, nc))])  # (ncc + 1, nc): the last row is the padding entry
    Gq = Gt.index_select(0, plan.chain_idx).view(plan.chain_t, ns, ncs, nc).transpose(2, 3)
    return Gq.contiguous().unsqueeze(-1)


def _chain(Gg: torch.Tensor, table: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out[s, c, j, :] = sum_t Gg[t, s, c, j] table[t, s, j, :] (a few multiply-adds per element)."""
    torch.mul(Gg[0], table[0], out=out)
    for t in range(1, Gg.shape[0]):
        out.addcmul_(Gg[t], table[t])
    return out


def _basis(plan: Plan, blocks, Dg: torch.Tensor, Rg: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """Z[s, c, b, k] = d^m(b) R_(s, r(b)) for the degree blocks (ra, rb, degree, b0, b1) of one basis
    (one multiply per degree); Dg (nc, nmono, nn), Rg (ns, nc, nr, nn)."""
    off = plan.deg_off
    ns, nc, _, nn = Z.shape
    for ra, rb, g, b0, b1 in blocks:
        torch.mul(Dg[None, :, None, off[g]:off[g + 1]], Rg[:, :, ra:rb, None],
                  out=Z[:, :, b0:b1].view(ns, nc, rb - ra, off[g + 1] - off[g], nn))
    return Z


def _sigma_major(t: torch.Tensor, c0: int, nc: int, nn: int) -> torch.Tensor:
    """Columns c0 .. c0 + nc*nn of (nr, ns, npad) as (ns, nc, nr, nn) (a view)."""
    return t[..., c0:c0 + nc * nn].view(t.shape[:-1] + (nc, nn)).permute(1, 2, 0, 3)


def pair_derivatives(plan: Plan, chunk: Chunk, R: torch.Tensor, Dm: torch.Tensor, G: torch.Tensor,
                     ws: Workspace):
    """dF/dd of every padded pair, pair-major: DF (npad + 1, ncs*ns*3) with columns (j, s, xyz) and a
    last all-zero row, and the per-centre sums (ncentre, ncs*ns*3).

    ``dF_(s,j) / dd = YP + 2 d YQ`` with ``YP = VP ZP`` (gradients of the monomials times R) and
    ``YQ = VQ ZQ`` (monomials times R'): two batched GEMMs per group (batch = centre x sigma); the
    sum is written feature-major into the chunk's buffer (long contiguous rows) and one 2-D
    transpose of the whole chunk gives the pair-major layout (a per-group permuting copy, whose
    innermost loop would run over xyz only, measured slower)."""
    ns, ncs, npad = plan.ns, plan.ncs, chunk.npad
    nbp, nbm = plan.nbp, plan.nbm
    W = ncs * ns * 3
    Gs = _chain_inputs(plan, G)  # (tmax, ns, ncentre, ncs, 1)
    DFf = ws.get("DFf", (ncs, ns, 3, npad + 1))  # feature-major
    DFf[..., npad] = 0.0  # unique pairs (i, i) without a periodic image read this column
    sums_t = torch.zeros((W, chunk.ncentre), dtype=plan.dtype, device=plan.device)
    for k0, nc, nn, c0 in chunk.groups:
        if not nn:
            continue
        # batches are (sigma, centre): the per-sigma chain-rule GEMMs write VP / VQ in that order
        Gg = Gs[:, :, k0:k0 + nc]
        VQ = _chain(Gg, plan.GQq, ws.get("VQ", (ns, nc, ncs, nbm))).view(ns * nc, ncs, nbm)
        Dg = _centre_view(Dm, c0, nc, nn)  # (nc, nmono, nn)
        ZQ = _basis(plan, plan.mu_deg_blocks, Dg, _sigma_major(R[1], c0, nc, nn), ws.get("ZQ", (ns, nc, nbm, nn)))
        YQ = torch.bmm(VQ, ZQ.view(ns * nc, nbm, nn), out=ws.get("YQ", (ns * nc, ncs, nn)))
        YQ = YQ.view(ns, nc, ncs, 1, nn)
        dg = _centre_view(chunk.dT, c0, nc, nn)[None, :, None]  # (1, nc, 1, 3, nn)
        # DFf columns of the group as (ns, nc, ncs, 3, nn)
        out = DFf[..., c0:c0 + nc * nn].view(ncs, ns, 3, nc, nn).permute(1, 3, 0, 2, 4)
        if nbp:
            VP = _chain(Gg, plan.GPq, ws.get("VP", (ns, nc, ncs, 3 * nbp))).view(ns * nc, 3 * ncs, nbp)
            ZP = _basis(plan, plan.p_deg_blocks, Dg, _sigma_major(R[0], c0, nc, nn), ws.get("ZP", (ns, nc, nbp, nn)))
            YP = torch.bmm(VP, ZP.view(ns * nc, nbp, nn), out=ws.get("YP", (ns * nc, 3 * ncs, nn)))
            torch.addcmul(YP.view(ns, nc, ncs, 3, nn), dg, YQ, value=2.0, out=out)
        else:
            torch.mul(dg, YQ, out=out).mul_(2.0)
        torch.sum(DFf.view(W, npad + 1)[:, c0:c0 + nc * nn].view(W, nc, nn), -1, out=sums_t[:, k0:k0 + nc])
    DF = ws.get("DF", (npad + 1, W))
    DF.copy_(DFf.view(W, npad + 1).t())  # plain 2-D transpose
    return DF, sums_t.t()


def sparse_derivatives(plan: Plan, chunk: Chunk, DF: torch.Tensor, sums: torch.Tensor, ws: Workspace,
                       into: torch.Tensor | None = None) -> torch.Tensor:
    """Fold padded pairs into the unique (i, j) list: (nupair, ncol, 3) = d fp_i / d r_j.

    A pair (i, j, T) adds dF/dd to (i, j) and subtracts it from (i, i) (``d = r_j + T - r_i``).
    Only the returned tensor is new memory; ``into`` (a (nupair, ncol * 3) view, e.g. one density
    channel's columns of a multi-channel result) receives it instead, with no copy. The temporaries
    come from the workspace."""
    ns, ncs = plan.ns, plan.ncs
    W = DF.shape[1]  # DF: pair-major (npad + 1, ncs*ns*3)
    if not plan.col_identity:
        out = torch.index_select(DF, 0, chunk.first_col, out=ws.get("U", (chunk.nupair, W)))
    elif into is not None:
        out = torch.index_select(DF, 0, chunk.first_col, out=into)
    else:
        out = DF.index_select(0, chunk.first_col)
    if chunk.dup_cols is not None:
        dup = torch.index_select(DF, 0, chunk.dup_cols, out=ws.get("dup", (chunk.dup_cols.shape[0], W)))
        out.index_add_(0, chunk.dup_up, dup)
    out.index_add_(0, chunk.self_up, sums, alpha=-1.0)
    if not plan.col_identity:
        cols = out.view(-1, ncs * ns, 3)
        if into is None:
            return cols.index_select(1, plan.col_flat)
        torch.index_select(cols, 1, plan.col_flat, out=into.view(-1, plan.ncol, 3))
        out = into
    return out.view(-1, plan.ncol, 3)


def compute_chunk(plans, chunk: Chunk, derivatives: bool, ws: Workspace):
    """fp (ncentre, nch*ncol) in chunk order and, with derivatives, dfp (nupair, nch*ncol, 3), for
    one plan or a list of plans (density channels: same columns and cutoff, different amplitudes).

    Channels share the chunk (neighbour pairs, index tables) and the monomials; each channel then
    runs exactly the operations a single-channel computation runs, on the same shapes, so its block
    of the result is bitwise that of the single-channel computation."""
    if isinstance(plans, Plan):
        plans = [plans]
    Dm = monomials(plans[0], chunk.dT, ws)
    if len(plans) == 1:
        return _compute_channel(plans[0], chunk, derivatives, ws, Dm)
    ncol, nch = plans[0].ncol, len(plans)
    t = {"dtype": plans[0].dtype, "device": plans[0].device}
    fp = torch.empty((chunk.ncentre, nch * ncol), **t)
    dfp = torch.empty((chunk.nupair, nch * ncol, 3), **t) if derivatives else None
    for c, plan in enumerate(plans):  # each channel's derivatives are written into its columns of dfp
        into = dfp.view(chunk.nupair, nch, ncol * 3)[:, c] if derivatives else None
        f, _ = _compute_channel(plan, chunk, derivatives, ws, Dm, into=into)
        fp[:, c * ncol:(c + 1) * ncol] = f
    return fp, dfp


def _compute_channel(plan: Plan, chunk: Chunk, derivatives: bool, ws: Workspace, Dm: torch.Tensor,
                     into: torch.Tensor | None = None):
    R = radial(plan, chunk, derivatives, ws)
    mu = component_sums(plan, chunk, R, Dm)
    F, G = features(plan, mu, need_grad=derivatives, block=chunk.block)
    fp = torch.empty_like(F)
    fp[chunk.gorder] = F
    if not derivatives:
        return fp, None
    DF, sums = pair_derivatives(plan, chunk, R, Dm, G, ws)
    return fp, sparse_derivatives(plan, chunk, DF, sums, ws, into=into)
