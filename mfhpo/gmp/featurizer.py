"""Native GMP featurizer in PyTorch (definition: docs/featurizer.md, /work/shared/docs/gmp_spec.md).

How it is computed (all vectorised over the pairs of a chunk of structures, same code on CPU/CUDA):

1. Neighbour pairs ``(i, j, T)`` with ``0 < |d| < R_c`` (vesin, :mod:`mfhpo.gmp.neighbors`); the
   centre's own density is a per-element constant (``Plan.mu_self``).
2. For a Gaussian probe ``A exp(-alpha r^2)`` and one density Gaussian ``B exp(-beta |r-d|^2)`` the
   overlap with a polynomial ``P`` is ``K(|d|) E[P(X)]``, ``X ~ N(lambda d, s^2)``. Expanding the
   Gaussian moments symbolically (:mod:`mfhpo.gmp.mcsh`), ``E[P(X)]`` is a fixed linear combination
   of ``d^m lambda^|m| s^(2j)``. So each component sum is
   ``mu_c = sum_pairs sum_(m,j) a_c(m,j) d^m R_(|m|,j)(|d|^2)`` with a few *radial functions*
   ``R_(l,j) = sum_k K_k lambda_k^l s_k^(2j)`` per (pair, sigma): one ``exp`` per (pair, Gaussian,
   sigma) and one small GEMM per neighbour element give all of them (tables: :mod:`mfhpo.gmp.plan`).
3. Layout (:mod:`mfhpo.gmp.kernels`): centres of a chunk are grouped by neighbour count and each
   centre's pairs are padded to the group's largest count (<= 20 % slack), feature-major, so
   per-centre sums are batched GEMMs: ``X_c = D_c R_c^T`` (monomials x radial functions) times a
   constant matrix gives the components.
4. Derivatives are analytic: ``d/dd [d^m R(|d|^2)] = (grad d^m) R + 2 d d^m R'``. Per group the
   products ``(grad d^m) R`` and ``d^m R'`` are formed once and contracted with per-(centre,
   sigma) chain-rule matrices (two batched GEMMs); a 2-D transpose, a gather (first periodic image
   of each (i, j)), an ``index_add_`` (further images) and the per-centre sums (``-`` for the
   centre i) give the sparse layout. Large temporaries live in a workspace reused from chunk to
   chunk; results of a structure computed in one piece are views of its chunk's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from ase import Atoms

from mfhpo.device import resolve_device
from mfhpo.errors import MfhpoError
from mfhpo.gmp import kernels
from mfhpo.gmp.neighbors import neighbor_pairs
from mfhpo.gmp.plan import Plan, get_plan
from mfhpo.gmp.setting import GMPSetting

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
    pair_i: torch.Tensor | None = None
    pair_j: torch.Tensor | None = None
    dfp: torch.Tensor | None = None

    @property
    def natoms(self) -> int:
        return int(self.fp.shape[0])

    @property
    def nfeat(self) -> int:
        return int(self.fp.shape[1])

    @property
    def has_derivatives(self) -> bool:
        return self.dfp is not None

    def to(self, device=None, dtype=None) -> Features:
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
# public API
# --------------------------------------------------------------------------------------------


def _element_indices(atoms: Atoms, plan: Plan, where: str) -> np.ndarray:
    """Index into ``plan.elements`` of every atom (by atomic number)."""
    idx = plan.z_to_element[atoms.numbers]
    if (idx < 0).any():
        missing = sorted(set(np.asarray(atoms.get_chemical_symbols())[idx < 0].tolist()))
        raise MfhpoError(f"{where}: element(s) {', '.join(missing)} have no density in the GMP setting")
    return idx


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
              device="cpu", options: FeaturizeOptions | None = None) -> Features:
    """GMP fingerprints (and optionally their derivatives) of one structure."""
    return featurize_many([atoms], setting, derivatives=derivatives, dtype=dtype, device=device, options=options)[0]


CPU_CHUNK_PAIRS = 32768  # measured best on OC20 (a_seed) among 16k/32k/64k pairs, with and without derivatives


LAYOUTS = ("blocked", "greedy")


@dataclass(frozen=True)
class FeaturizeOptions:
    """How :func:`featurize_many` lays out and cuts its work (never what it computes, beyond the last
    bits; see docs/featurizer.md).

    ``layout``: "blocked" (each centre's pairs padded to its own aligned width, fixed-shape GEMMs: a
    structure's features are bitwise the same whatever else shares its chunk) or "greedy" (centres
    grouped by neighbour count, GEMMs of the chunk's size: the layout of checkpoints made before the
    blocked one, whose retrains need it); None: "blocked" on the CPU, "greedy" on CUDA.
    ``share_chunks``: several small structures per chunk (True) or one structure per chunk (False);
    None: shared, except for the greedy layout on the CPU (there one structure per chunk keeps the
    features batch-independent). ``chunk_mb``: megabytes of chunk-level per-pair buffers; None: 48
    on the CPU (and at most ``CPU_CHUNK_PAIRS`` pairs), 256 on CUDA. ``chunk_pairs``: pairs per chunk,
    overriding ``chunk_mb`` (tuning only).
    """

    share_chunks: bool | None = None
    chunk_mb: float | None = None
    chunk_pairs: int | None = None
    layout: str | None = None

    def __post_init__(self):
        if self.chunk_mb is not None and not float(self.chunk_mb) > 0:
            raise MfhpoError(f"featurize option chunk_mb must be > 0, got {self.chunk_mb}")
        if self.chunk_pairs is not None and int(self.chunk_pairs) < 1:
            raise MfhpoError(f"featurize option chunk_pairs must be >= 1, got {self.chunk_pairs}")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise MfhpoError(f"featurize option layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")

    def layout_on(self, device) -> str:
        """The layout used on ``device``."""
        if self.layout is not None:
            return self.layout
        return "blocked" if torch.device(device).type == "cpu" else "greedy"

    def shares_chunks(self, device) -> bool:
        """Whether small structures share chunks on ``device``."""
        if self.share_chunks is not None:
            return bool(self.share_chunks)
        return not (torch.device(device).type == "cpu" and self.layout_on(device) == "greedy")

    def resolved(self, device) -> FeaturizeOptions:
        """These options with the layout and chunk sharing decided for ``device`` (what a checkpoint
        records)."""
        return FeaturizeOptions(self.shares_chunks(device), self.chunk_mb, self.chunk_pairs, self.layout_on(device))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> FeaturizeOptions:
        """Options from a record; records without ``layout`` were made with the greedy one."""
        d = d or {}
        return cls(**{k: d.get(k) for k in ("share_chunks", "chunk_mb", "chunk_pairs")}, layout=d.get("layout", "greedy"))


def _chunk_pairs(plan: Plan, derivatives: bool, options: FeaturizeOptions) -> int:
    """Pairs per chunk: ``options.chunk_pairs`` when given; else chunk-level per-pair buffers of at most
    ``options.chunk_mb`` (default 48 MB on the CPU, 256 MB on GPUs), and on the CPU with the default at
    most CPU_CHUNK_PAIRS (the temporaries of one centre group then stay in cache; larger chunks were
    slower)."""
    if options.chunk_pairs is not None:
        return int(options.chunk_pairs)
    dev = plan.device
    mb = options.chunk_mb if options.chunk_mb is not None else (256.0 if dev.type == "cuda" else 48.0)
    pairs = int(float(mb) * 2 ** 20 / (8 * plan.pair_doubles(derivatives)))
    if dev.type == "cpu" and options.chunk_mb is None:
        pairs = min(pairs, CPU_CHUNK_PAIRS)
    return max(1, pairs)


def featurize_many(images: Sequence[Atoms], setting: GMPSetting, derivatives: bool = False,
                   dtype: torch.dtype = torch.float64, device="cpu", cache=None, progress: bool = False,
                   source: str = "images", options: FeaturizeOptions | None = None) -> list[Features]:
    """Fingerprints of many structures; small structures are batched into chunks of pairs.

    With ``cache`` (:class:`~mfhpo.gmp.cache.FeatureCache`) results are looked up first and
    computed ones are stored. Results live on ``device`` in ``dtype``. ``options``
    (:class:`FeaturizeOptions`, default: the device's defaults) say how the work is chunked.
    """
    if isinstance(dtype, str):
        dtype = {"float64": torch.float64, "float32": torch.float32}.get(dtype)
        if dtype is None:
            raise MfhpoError("dtype must be float64 or float32")
    dev = resolve_device(device)
    options = options or FeaturizeOptions()
    images = list(images)
    # density channels differ only in per-element amplitudes: one pass computes all of them (shared
    # neighbour pairs, index tables and monomials); each channel is cached on its own, under its
    # single-channel setting, with exactly the bytes a single-channel computation stores
    subs = setting.channel_settings()
    # the layouts round differently in the last bits: cache entries say which one made them
    blocked = options.layout_on(dev) == "blocked"
    variant = "b" if blocked else ""
    results: list[Features | None] = [None] * len(images)
    todo = list(range(len(images)))
    missing: dict = {}  # image -> channels without a cache entry
    if cache is not None:
        todo = []
        for k, atoms in enumerate(images):
            parts = [cache.get(sub, atoms, dtype, derivatives, variant) for sub in subs]
            if any(p is None for p in parts):
                todo.append(k)
                missing[k] = [c for c, p in enumerate(parts) if p is None]
                continue
            f = parts[0] if len(parts) == 1 else _concat_channels(parts)
            results[k] = f if dev.type == "cpu" else f.to(device=dev)  # cache entries are on the CPU
    if todo:
        # always computed in float64 (density fits mix large terms of opposite sign), then cast
        plans = [get_plan(sub, dev) for sub in subs]
        budget = _chunk_pairs(plans[0], derivatives, options)
        bar = _Progress(len(todo), progress)
        ncol = plans[0].ncol
        try:
            for idx, feats in _run(plans, images, todo, derivatives, budget, source, options.shares_chunks(dev),
                                   blocked):
                if dtype != torch.float64:
                    feats = feats.to(dtype=dtype)
                results[idx] = feats
                if cache is not None:
                    for c in missing[idx]:
                        part = feats if len(subs) == 1 else _channel_block(feats, c, ncol)
                        cache.put(subs[c], images[idx], dtype, derivatives, part, variant)
                bar.advance()
        finally:
            bar.close()
    return results  # type: ignore[return-value]


def _channel_block(f: Features, c: int, ncol: int) -> Features:
    """Channel ``c``'s columns of a multi-channel result (views)."""
    sl = slice(c * ncol, (c + 1) * ncol)
    if f.dfp is None:
        return Features(f.fp[:, sl])
    return Features(f.fp[:, sl], f.pair_i, f.pair_j, f.dfp[:, sl])


def _concat_channels(parts: Sequence[Features]) -> Features:
    """One structure's features of several channels side by side (same neighbour pairs: same cutoff)."""
    first = parts[0]
    fp = torch.cat([f.fp for f in parts], dim=1)
    if first.dfp is None:
        return Features(fp)
    for f in parts[1:]:
        if not (torch.equal(f.pair_i, first.pair_i) and torch.equal(f.pair_j, first.pair_j)):
            raise MfhpoError("density channels produced different neighbour pairs")  # cannot happen: same cutoff
    return Features(fp, first.pair_i, first.pair_j, torch.cat([f.dfp for f in parts], dim=1))


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


def _run(plans: list[Plan], images, todo, derivatives: bool, budget: int, source: str, share_chunks: bool,
         blocked: bool):
    """Yield (image index, Features) in order, computing chunk by chunk (chunks of about ``budget``
    pairs; a large structure is split by centres).

    A structure's features must not depend on which other structures were featurized in the same
    call: BLAS sums over padded pair columns and row blocks round differently for different chunk
    shapes (1 ulp), and training amplifies such differences, so features cached by a study's
    low-budget trials would differ from a bundle retrain's fresh ones. The ``blocked`` layout (the
    CPU's default) makes every chunk compute each centre the same way; with the greedy layout only
    ``share_chunks=False`` (every chunk holds pieces of one structure) does. On CUDA the greedy layout
    with shared chunks is the default (speed; CUDA training is not bitwise reproducible anyway)."""
    plan = plans[0]  # device, cutoff, elements: the same for every channel
    dev = plan.device
    pending: list = []  # pieces: (img, nb, elem, c0, c1)
    npend = 0
    partial: dict = {}
    ws = kernels.Workspace(dev, plan.dtype)

    def flush():
        nonlocal pending, npend
        if not pending:
            return []
        chunk = kernels.prepare_chunk(plan, pending, derivatives, blocked)
        fp, dfp = kernels.compute_chunk(plans, chunk, derivatives, ws)
        done = []
        # a structure computed in one piece gets views of the chunk's output (no copy: the chunk's
        # output buffers hold exactly its structures' results); split structures are concatenated
        for (img, nb, elem, c0, c1), (c_off, nc, u_off, nu) in zip(pending, chunk.meta):
            f = fp[c_off:c_off + nc]
            g = None if dfp is None else dfp[u_off:u_off + nu]
            partial.setdefault(img, []).append((f, g))
            if c1 == nb.natoms:
                parts = partial.pop(img)
                fp_all = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
                if derivatives:
                    dfp_all = torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
                    feats = Features(fp_all, torch.from_numpy(nb.pair_i).to(dev), torch.from_numpy(nb.pair_j).to(dev),
                                     dfp_all)
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
        if pending and (not share_chunks or npend + nb.npair + n > budget >= nb.npair + n):
            yield from flush()  # a structure that fits in one chunk is not split (no concatenation)
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
            npend += int(nb.center_start[c1] - nb.center_start[c0]) + (c1 - c0)
            c0 = c1
            if npend >= budget:
                yield from flush()
    yield from flush()
