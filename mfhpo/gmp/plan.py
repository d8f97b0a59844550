"""Constant tables of a GMP setting (built once per setting/device, cached): the "plan" the kernels in
:mod:`mfhpo.gmp.kernels` execute.

Notation (docs/featurizer.md, "How it is computed"):

* ``s`` indexes the distinct sigmas (``ns``), ``slot`` the distinct MCSH components per sigma
  (``nslot``); ``mu[s, slot]`` are a centre's component sums.
* Radial functions ``R_r = sum_k K_k lambda_k^l s_k^(2j)``, ``r = (l, j)`` (``nr`` of them), and
  ``R'_r = dR_r / d(|d|^2)``. Every component is ``sum_(m, r) A[s, (m, r), slot] d^m R_r(|d|^2)``
  with ``|m| = l_r``: the *mu basis* (monomials of degree ``l_r`` times ``R_r``), ``nbm`` entries.
* The gradient of one basis entry is ``grad(d^m) R_r + 2 d d^m R'_r``. Its first part lives on the
  *P basis* (monomials of degree ``l_r - 1`` times ``R_r``, ``nbp`` entries; table ``MP``), its
  second part on the mu basis with ``R'`` instead of ``R`` (the *Q basis*, table ``A``).
* Monomials ``d^m`` are stored in degree blocks: block ``l`` = ``[x * block(l-1), y * (last l of
  block(l-1)), z^l]``, offsets ``deg_off``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols

from mfhpo.gmp import mcsh
from mfhpo.gmp.setting import GMPSetting

GMP_VECTOR_THRESHOLD = 1e-8  # gmp, square=False, multi-component groups: F <= 1e-8 -> 0 (spec 6)
ORDERNORM_THRESHOLD = 1e-2  # gmpordernorm, square=False: sqrt(S) < 1e-2 -> 0 (spec 10)

KIND_SIGNED, KIND_NORM, KIND_SUMSQ = 0, 1, 2
CSUM_FULL_MAX = 512  # monomial x radial x sigma products per pair up to which component sums use one GEMM


def _distinct_sigmas(setting: GMPSetting) -> list[float]:
    out: list[float] = []
    for _, _, sg in setting.columns:
        if sg not in out:
            out.append(sg)
    return out


def _monomial_blocks(maxdeg: int) -> list[list[tuple]]:
    """Monomials by degree, in the order :func:`mfhpo.gmp.kernels.monomials` computes them."""
    blocks = [[(0, 0, 0)]]
    for deg in range(1, maxdeg + 1):
        prev = blocks[-1]
        blocks.append([(a + 1, b, c) for a, b, c in prev] + [(a, b + 1, c) for a, b, c in prev[-deg:]]
                      + [(0, 0, deg)])
    return blocks


def _basis_layout(blocks_wanted, mono_blocks):
    """Positions of (monomial, radial) products for blocks ``(radial index, degree)``:
    ({(m, ri): position}, size, [(ri, degree, b0, b1)])."""
    pos, off, out = {}, 0, []
    for ri, g in blocks_wanted:
        n = len(mono_blocks[g])
        out.append((ri, g, off, off + n))
        for k, m in enumerate(mono_blocks[g]):
            pos[(m, ri)] = off + k
        off += n
    return pos, off, out


def _merge_degree_blocks(blocks):
    """Consecutive basis blocks (ri, degree, b0, b1) of one degree as (ra, rb, degree, b0, b1): the
    products of radials ra..rb-1 with that degree's monomials, radial-major (one multiply each)."""
    out = []
    for ri, g, b0, b1 in blocks:
        if out and out[-1][2] == g and out[-1][1] == ri and out[-1][4] == b0:
            ra, _, _, c0, _ = out[-1]
            out[-1] = (ra, ri + 1, g, c0, b1)
        else:
            out.append((ri, ri + 1, g, b0, b1))
    return out


class Plan:
    """Constant tables of a setting on one device (float64)."""

    def __init__(self, setting: GMPSetting, device: torch.device, dtype: torch.dtype = torch.float64):
        self.setting = setting
        self.device, self.dtype = device, dtype
        self.sigmas = _distinct_sigmas(setting)
        self.ns = len(self.sigmas)
        self.elements = list(setting.elements)
        self.z_to_element = np.full(len(chemical_symbols), -1, dtype=np.int64)  # atomic number -> index
        for k, el in enumerate(self.elements):
            if el in atomic_numbers:  # anything else can never match an atom
                self.z_to_element[atomic_numbers[el]] = k
        self.cosine = setting.cutoff_function == "cosine"
        self.cutoff = setting.cutoff
        col_cc, slot_polys, kinds, thresholds = self._components()
        self._expectations(slot_polys)
        self._radial_tables()
        self._column_tables(col_cc, kinds, thresholds)

    # ----------------------------------------------------------------------------------------
    def _components(self):
        """Distinct components per sigma (slots) and how columns combine them."""
        s = self.setting
        ordernorm = s.scheme == "gmpordernorm"
        use_solid = ordernorm and s.solid_harmonics
        slot_keys: list[list] = [[] for _ in range(self.ns)]
        slot_polys: list[list] = [[] for _ in range(self.ns)]
        col_cc = []  # per column: list of (sigma index, slot, weight)
        kinds, thresholds = [], []
        for (order, group, sg) in s.columns:
            si = self.sigmas.index(sg)
            inv_rs = 1.0 if use_solid else s.inv_rs(sg)
            if ordernorm:
                comps = [(c, mcsh.multinomial_weight(abc)) for abc in mcsh.group_indices(order)
                         for c in mcsh.components(abc)]
            else:
                comps = [(c, 1.0) for c in mcsh.components(mcsh.group_indices(order)[group - 1])]
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
        self.nslot = max(len(k) for k in slot_keys)
        return col_cc, slot_polys, kinds, thresholds

    def _expectations(self, slot_polys):
        """Radial functions, monomials, and the tables A (mu/Q basis) and MP (P basis)."""
        ns, nslot = self.ns, self.nslot
        terms = [[mcsh.gaussian_expectation(p) for p in polys] for polys in slot_polys]  # {(m, j): coef}
        radial = sorted({(sum(m), j) for per in terms for t in per for (m, j) in t})
        self.radial, self.nr = radial, len(radial)
        self.maxdeg = max(l for l, _ in radial)
        mono_blocks = _monomial_blocks(self.maxdeg)
        self.deg_off = np.cumsum([0] + [len(b) for b in mono_blocks]).tolist()
        self.nmono = self.deg_off[-1]
        pos_mu, self.nbm, self.mu_blocks = _basis_layout([(ri, l) for ri, (l, _) in enumerate(radial)], mono_blocks)
        pos_p, self.nbp, self.p_blocks = _basis_layout(
            [(ri, l - 1) for ri, (l, _) in enumerate(radial) if l >= 1], mono_blocks)
        self.mu_deg_blocks = _merge_degree_blocks(self.mu_blocks)
        self.p_deg_blocks = _merge_degree_blocks(self.p_blocks)
        A = np.zeros((ns, self.nbm, nslot))
        MP = np.zeros((ns, self.nbp, 3, nslot))  # d/dd_x of the monomial part, on the P basis
        for si in range(ns):
            for slot, t in enumerate(terms[si]):
                for (m, j), coef in t.items():
                    ri = radial.index((sum(m), j))
                    A[si, pos_mu[(m, ri)], slot] += coef
                    for x in range(3):
                        if m[x] > 0:
                            mm = tuple(m[k] - (k == x) for k in range(3))
                            MP[si, pos_p[(mm, ri)], x, slot] += coef * m[x]
        t = {"device": self.device, "dtype": self.dtype}
        self.A = torch.tensor(A, **t)
        self.MP = torch.tensor(MP, **t)
        # component sums from per-centre sums X of monomial x radial products, only degree l
        # monomials with degree l radial functions (radials are sorted by degree): blocks
        # (l, ra, rb, x0, x1) of X columns (mono, radial, sigma); Xcoef (ns, nx / ns, nslot) maps
        # the (mono, radial) products of one sigma to its components
        self.x_blocks, xpos, x0 = [], {}, 0
        for l in range(self.maxdeg + 1):
            rs_l = [ri for ri, (ll, _) in enumerate(radial) if ll == l]
            if not rs_l:
                continue
            ra, rb = rs_l[0], rs_l[-1] + 1
            nm = self.deg_off[l + 1] - self.deg_off[l]
            for k in range(nm):
                for ri in range(ra, rb):
                    xpos[(self.deg_off[l] + k, ri)] = x0 // ns + k * (rb - ra) + (ri - ra)
            self.x_blocks.append((l, ra, rb, x0, x0 + nm * (rb - ra) * ns))
            x0 += nm * (rb - ra) * ns
        self.nx = x0
        Xcoef = np.zeros((ns, x0 // ns, nslot))
        for ri, g, b0, b1 in self.mu_blocks:
            for k in range(b1 - b0):
                Xcoef[:, xpos[(self.deg_off[g] + k, ri)], :] = A[:, b0 + k, :]
        self.Xcoef = torch.tensor(Xcoef, **t)
        # small settings: one GEMM per group over all monomials x all radials (fewer calls; the
        # per-call cost outweighs the extra products), with the full map Afull (nmono*nr*ns, ns*nslot)
        # (measured per OC20 structure: a_seed 0.55 vs 0.8 ms, orders 0-4 all groups 3.0 vs 1.45 ms)
        self.csum_full = self.nmono * self.nr * ns <= CSUM_FULL_MAX
        if self.csum_full:
            Afull = np.zeros((self.nmono, self.nr, ns, ns, nslot))
            for (mono, ri), q in xpos.items():
                for si in range(ns):
                    Afull[mono, ri, si, si, :] = Xcoef[si, q, :]
            self.Afull = torch.tensor(Afull.reshape(self.nmono * self.nr * ns, ns * nslot), **t)
        self._A_np = A

    def _radial_tables(self):
        """Per element: exponents -eta (ns, K, 1) and weights WT (ns, 2*nr, K) of [R | R'], and the
        centre's own (d = 0) contribution to mu."""
        s = self.setting
        ns, nr = self.ns, self.nr
        if s.scheme == "gmpordernorm":
            amp = [(sg * math.sqrt(2 * math.pi)) ** -3 for sg in self.sigmas]
        else:
            amp = [1.0 / (sg * math.sqrt(2 * math.pi)) for sg in self.sigmas]
        # the self pair (d = 0) only sees degree-0 monomials: mu_self[s, slot] = sum_r A[s, (1, r), slot] R_r(0)
        deg0 = [(ri, b0) for ri, g, b0, b1 in self.mu_blocks if g == 0]
        t = {"device": self.device, "dtype": self.dtype}
        self.neg_eta, self.WT, mu_self = [], [], []
        for el in self.elements:
            Bs, betas = s.densities[el]
            K = len(Bs)
            eta = np.zeros((ns, K))
            WT = np.zeros((ns, 2, nr, K))
            for k, (B, beta) in enumerate(zip(Bs, betas)):
                for si, sg in enumerate(self.sigmas):
                    alpha = 1.0 / (2 * sg * sg)
                    g = alpha + beta
                    lam, s2 = beta / g, 1.0 / (2 * g)
                    eta[si, k] = alpha * beta / g
                    pref = amp[si] * B * (math.pi / g) ** 1.5
                    for ri, (l, j) in enumerate(self.radial):
                        v = pref * lam ** l * s2 ** j
                        WT[si, 0, ri, k] = v  # R = sum_k v_k exp(-eta_k |d|^2)
                        WT[si, 1, ri, k] = -eta[si, k] * v  # R' = dR / d(|d|^2)
            R0 = WT[:, 0].sum(-1)  # (ns, nr) at d = 0
            ms = np.zeros((ns, self.nslot))
            for ri, b0 in deg0:
                ms += R0[:, ri, None] * self._A_np[:, b0, :]
            self.neg_eta.append(torch.tensor(-eta[:, :, None], **t))
            self.WT.append(torch.tensor(WT.reshape(ns, 2 * nr, K), **t))
            mu_self.append(ms.reshape(-1))
        self.mu_self = torch.tensor(np.array(mu_self), **t)  # (n_elements, ns*nslot)

    def _column_tables(self, col_cc, kinds, thresholds):
        """How component sums become columns, and the layout of the derivative columns."""
        s = self.setting
        ns, nslot = self.ns, self.nslot
        t = {"device": self.device, "dtype": self.dtype}
        li = {"device": self.device, "dtype": torch.long}
        cc_fi, cc_w, cc_col = [], [], []  # flattened component index si * nslot + slot, weight, column
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
        self.is_ordernorm_thr = self.thr == ORDERNORM_THRESHOLD
        # derivative columns are computed per sigma as (j, s) with j the column's rank within its sigma
        col_si = [self.sigmas.index(sg) for _, _, sg in s.columns]
        col_j, count = [], [0] * ns
        for si in col_si:
            col_j.append(count[si])
            count[si] += 1
        ncs = max(count)
        self.ncs = ncs
        Scc = np.zeros((ncc, ns * nslot * ncs))  # G (per component entry) -> Gp[s, slot, j]
        for k in range(ncc):
            Scc[k, cc_fi[k] * ncs + col_j[cc_col[k]]] = 1.0
        # chain-rule matrices: VP[c, (s, j, x, b)] = (G @ GP)[c, ...] with
        # GP[k, (s, j, x, b)] = sum_slot Scc[k, (s, slot, j)] MP[s, b, x, slot]; VQ likewise with A
        Sv = Scc.reshape(ncc, ns, nslot, ncs)
        GP = np.einsum("kstj,sbxt->ksjxb", Sv, self.MP.cpu().numpy())
        GQ = np.einsum("kstj,sbt->ksjb", Sv, self._A_np)
        # GP and GQ are block-sparse: a component entry k feeds one (sigma, column) q = s * ncs + j.
        # Padded per q to tmax entries (index ncc: a zero column appended to G), the chain rule is
        # VP[s, c, j] = sum_t G[c, idx[s, j, t]] GPq[s, j, t] (tmax multiply-adds per element of VP
        # instead of the ncc of a dense G @ GP)
        nq = ns * ncs
        members: list[list[int]] = [[] for _ in range(nq)]
        for k in range(ncc):
            members[(cc_fi[k] // nslot) * ncs + col_j[cc_col[k]]].append(k)
        tmax = max(len(m) for m in members)
        idx = np.full((tmax, nq), ncc, dtype=np.int64)
        GPr = GP.reshape(ncc, nq, 3 * self.nbp)
        GQr = GQ.reshape(ncc, nq, self.nbm)
        GPq = np.zeros((tmax, nq, 3 * self.nbp))
        GQq = np.zeros((tmax, nq, self.nbm))
        for q, ks in enumerate(members):
            for t_, k in enumerate(ks):
                idx[t_, q] = k
                GPq[t_, q] = GPr[k, q]
                GQq[t_, q] = GQr[k, q]
        self.chain_idx = torch.tensor(idx.reshape(-1), **li)
        self.chain_t = tmax
        self.GPq = torch.tensor(GPq.reshape(tmax, ns, 1, ncs, 3 * self.nbp), **t)
        self.GQq = torch.tensor(GQq.reshape(tmax, ns, 1, ncs, self.nbm), **t)
        flat = [j * ns + si for si, j in zip(col_si, col_j)]  # derivative layout (.., j, s, x)
        self.col_flat = torch.tensor(flat, **li)
        self.col_identity = flat == list(range(ns * ncs))

    # ----------------------------------------------------------------------------------------
    def pair_doubles(self, derivatives: bool) -> int:
        """Doubles per padded pair of a chunk's chunk-level buffers (for chunk sizing)."""
        ns, nr = self.ns, self.nr
        if derivatives:
            # R and R', monomials, d, the derivative buffer and its transpose
            return 2 * ns * nr + self.nmono + 3 + 2 * 3 * ns * self.ncs
        return ns * nr + self.nmono + 3


_PLANS: dict = {}


def get_plan(setting: GMPSetting, device: torch.device) -> Plan:
    if len(setting.channels) > 1:  # featurize_many computes one channel at a time
        raise ValueError("a plan is built for one density channel; use setting.channel_settings()")
    key = (setting.key(), str(device))
    p = _PLANS.get(key)
    if p is None:
        if len(_PLANS) > 16:
            _PLANS.clear()
        p = _PLANS[key] = Plan(setting, device)
    return p
