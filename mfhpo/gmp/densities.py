"""Valence densities: AMPTorch ``.g`` files and mfhpo's built-in default model.

A density of element *e* is a sum of spherical Gaussians ``rho_e(r) = sum_k B_k exp(-beta_k r^2)``
(``B`` in electrons/Å^3, ``beta`` in Å^-2), stored as ``((B_1, ...), (beta_1, ...))``.

The default model (docs/featurizer.md): one normalised 3-D Gaussian per element that carries the
element's valence electron count ``N_v`` (from its periodic-table group, :func:`valence_electrons`)
with ``beta = 1 / r_cov^2`` (``r_cov`` = ``ase.data.covalent_radii``, at least 0.3 Å), i.e.
``B = N_v (beta/pi)^(3/2)``: the density integrates to ``N_v`` and falls to 1/e at the covalent
radius.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from ase.data import atomic_numbers, chemical_symbols, covalent_radii

from mfhpo.errors import MfhpoError

Density = tuple  # ((B, ...), (beta, ...))


def read_g_file(path: str | Path) -> Density:
    """Read an AMPTorch ``.g`` file: one ``B beta`` pair per line; extra columns ignored."""
    path = Path(path)
    if not path.exists():
        raise MfhpoError(f"{path}: density file not found")
    B, beta = [], []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise MfhpoError(f"{path}: cannot read density file ({type(exc).__name__})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            b, e = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            raise MfhpoError(f"{path}: line {lineno}: expected two numbers 'B beta'") from None
        if not (math.isfinite(b) and math.isfinite(e)) or e <= 0:
            raise MfhpoError(f"{path}: line {lineno}: B must be finite and beta > 0")
        B.append(b)
        beta.append(e)
    if not B:
        raise MfhpoError(f"{path}: density file has no Gaussians")
    return (tuple(B), tuple(beta))


def _element_of_file(name: str) -> str:
    stem = name
    for sep in ("_", "."):
        stem = stem.split(sep)[0]
    return stem


def load_density_dir(directory: str | Path, elements: Iterable[str]) -> dict[str, Density]:
    """Densities of ``elements`` from a directory of ``.g`` files.

    A file belongs to the element named by its file name up to the first ``_`` or ``.``
    (``Cu_pseudodensity_4.g`` -> Cu). An element without a file is an error.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MfhpoError(f"{directory}: density directory not found")
    files: dict[str, Path] = {}
    for p in sorted(directory.iterdir()):
        if p.is_file() and p.suffix == ".g":
            el = _element_of_file(p.name)
            if el in files:
                raise MfhpoError(f"{directory}: two density files for element {el} ({files[el].name}, {p.name})")
            files[el] = p
    out = {}
    for el in elements:
        if el not in files:
            raise MfhpoError(f"{directory}: no density file for element {el}")
        out[el] = read_g_file(files[el])
    return out


def valence_electrons(symbol: str) -> int:
    """Valence electron count from the periodic-table group.

    Groups 1-2: 1-2; d-block groups 3-12: the group number (s + d electrons); p-block groups 13-18:
    group - 10 (He: 2); lanthanides and actinides: 3.
    """
    if symbol not in atomic_numbers or atomic_numbers[symbol] == 0:
        raise MfhpoError(f"unknown element symbol {symbol!r}")
    z = atomic_numbers[symbol]
    if z <= 2:
        return z
    # (first Z of period, period length) for periods 2..7
    starts = [(3, 8), (11, 8), (19, 18), (37, 18), (55, 32), (87, 32)]
    for z0, length in starts:
        if z0 <= z < z0 + length:
            k = z - z0  # 0-based position in the period
            if length == 8:
                return k + 1  # groups 1, 2, 13..18 -> 1..8
            if length == 18:
                if k < 2:
                    return k + 1
                if k < 12:
                    return k + 1  # groups 3..12
                return k - 9  # groups 13..18 -> 3..8
            # periods with f-block: s (2), La/Ac + 14 f (15 incl. Lu/Lr), d groups 4..12, p block
            if k < 2:
                return k + 1
            if k < 17:
                return 3
            if k < 26:
                return k - 13  # groups 4..12
            return k - 23  # groups 13..18 -> 3..8
    raise MfhpoError(f"no valence electron count for element {symbol}")


def default_density(symbol: str) -> Density:
    """mfhpo's built-in density of ``symbol``: one normalised Gaussian with ``N_v`` electrons."""
    nv = valence_electrons(symbol)
    r = max(float(covalent_radii[atomic_numbers[symbol]]), 0.3)
    beta = 1.0 / (r * r)
    B = nv * (beta / math.pi) ** 1.5
    return ((B,), (beta,))


def electrons(density: Density) -> float:
    """Integral of a density: ``sum_k B_k (pi/beta_k)^(3/2)``."""
    return float(sum(b * (math.pi / e) ** 1.5 for b, e in zip(*density)))


# Chemical channels (docs/featurizer.md): the same density shapes, reweighted so that a channel's
# features tell neighbour elements apart in a second (third) way. One feature block per channel.
CHANNELS = ("valence", "count", "period")


def channels_problem(channels) -> str | None:
    """Why ``channels`` is not a valid channel list (None when it is): config, setting and space use this."""
    names = list(channels) if isinstance(channels, (list, tuple)) else None
    if not names or len(set(names)) != len(names) or any(c not in CHANNELS for c in names):
        return f"channels must be a list of distinct names out of {', '.join(CHANNELS)}, got {channels!r}"
    return None


def period(symbol: str) -> int:
    """Row of the periodic table (H, He: 1; Li..Ne: 2; ...)."""
    z = atomic_numbers[symbol]
    return 1 + sum(z > last for last in (2, 10, 18, 36, 54, 86))


def channel_density(symbol: str, density: Density, channel: str) -> Density:
    """``density`` rescaled for ``channel``: ``valence`` as is (integral = valence electrons);
    ``count`` integral 1 (each neighbour counts once); ``period`` integral = the element's period."""
    if channel == "valence":
        return density
    if channel not in CHANNELS:
        raise MfhpoError(f"unknown density channel {channel!r} (one of {', '.join(CHANNELS)})")
    total = electrons(density)
    if not total > 0:
        raise MfhpoError(f"density of {symbol} integrates to {total:g}: cannot rescale it for channel {channel!r}")
    scale = (1.0 if channel == "count" else float(period(symbol))) / total
    return (tuple(b * scale for b in density[0]), tuple(density[1]))


def known_symbol(symbol: str) -> bool:
    return symbol in chemical_symbols and symbol != "X"
