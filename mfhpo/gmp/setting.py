"""``GMPSetting``: a frozen, hashable description of a GMP fingerprint (columns, cutoff, densities).

Constructors:

* :meth:`GMPSetting.from_amptorch_json` / :meth:`GMPSetting.from_amptorch_dict`: AMPTorch's
  ``{"fp_scheme", "fp_params", "elements"}`` form (see /work/shared/docs/gmp_spec.md sections 1, 10).
* :meth:`GMPSetting.from_descriptor`: mfhpo's :class:`~mfhpo.config.DescriptorConfig`.

Every problem raises :class:`~mfhpo.errors.MfhpoError` naming the source and the key.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mfhpo.errors import MfhpoError
from mfhpo.gmp import mcsh
from mfhpo.gmp.densities import (
    Density,
    channel_density,
    channels_problem,
    default_density,
    known_symbol,
    load_density_dir,
    read_g_file,
)

# bump when the numerical definition changes (invalidates caches)
DEFINITION_VERSION = "mfhpo-gmp-2"  # 2: per-sigma component sums and chain rule (last-bit changes)

GMP_GROUPS = {n: list(range(1, mcsh.n_groups(n) + 1)) for n in range(mcsh.GMP_MAX_ORDER + 1)}


def default_ordernorm_cutoff(sigma_max: float) -> float:
    """AMPTorch GMPOrderNorm's default cutoff (spec section 10): 11.6 Å for sigma_max = 2 Å."""
    A = 1.0 / (sigma_max * math.sqrt(2.0 * math.pi))
    alpha = 1.0 / (2.0 * sigma_max ** 2)
    return round(math.sqrt(math.log(1e-8 / A) / (-alpha)), 2)


@dataclass(frozen=True)
class GMPSetting:
    """Everything that determines GMP fingerprint values.

    ``columns``: ``(order, group, sigma)`` per feature, in output order (``group = 0`` for
    ``gmpordernorm``). ``densities``: element -> ``((B, ...), (beta, ...))``. ``channels``: one block
    of ``columns`` per density channel (:data:`~mfhpo.gmp.densities.CHANNELS`), in this order.
    """

    scheme: str
    columns: tuple
    cutoff: float
    cutoff_function: str = "hard"
    square: bool = False
    rs_setup: Mapping[str, Any] = field(default_factory=lambda: {"setup": "constant", "rs": 1.0})
    solid_harmonics: bool = False
    elements: tuple = ()
    densities: Mapping[str, Density] = field(default_factory=dict)
    channels: tuple = ("valence",)

    # ----------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        src = "setting"
        if self.scheme not in ("gmp", "gmpordernorm"):
            raise MfhpoError(f"{src}: scheme must be 'gmp' or 'gmpordernorm', got {self.scheme!r}")
        if self.cutoff_function not in ("hard", "cosine"):
            raise MfhpoError(f"{src}: cutoff_function must be 'hard' or 'cosine', got {self.cutoff_function!r}")
        if not (isinstance(self.cutoff, (int, float)) and math.isfinite(self.cutoff) and self.cutoff > 0):
            raise MfhpoError(f"{src}: cutoff must be a positive number (Å), got {self.cutoff!r}")
        if not self.columns:
            raise MfhpoError(f"{src}: no feature columns")
        cols = tuple((int(o), int(g), float(s)) for o, g, s in self.columns)
        object.__setattr__(self, "columns", cols)
        object.__setattr__(self, "cutoff", float(self.cutoff))
        object.__setattr__(self, "rs_setup", dict(self.rs_setup))
        _check_rs(self.rs_setup, src)
        for o, g, s in cols:
            if not s > 0:
                raise MfhpoError(f"{src}: sigma must be positive, got {s}")
            if self.scheme == "gmp":
                if o not in GMP_GROUPS:
                    raise MfhpoError(f"{src}: order {o} is not available for scheme gmp (0-5)")
                if g not in GMP_GROUPS[o]:
                    raise MfhpoError(f"{src}: order {o} has no group {g} (groups {GMP_GROUPS[o]})")
            else:
                if not 0 <= o <= mcsh.ORDERNORM_MAX_ORDER:
                    raise MfhpoError(f"{src}: order {o} is not available for scheme gmpordernorm (0-9)")
        dens = {}
        for el in self.elements:
            if el not in self.densities:
                raise MfhpoError(f"{src}: element {el} has no density")
            B, beta = self.densities[el]
            dens[el] = (tuple(float(b) for b in B), tuple(float(e) for e in beta))
        object.__setattr__(self, "elements", tuple(sorted(self.elements)))
        object.__setattr__(self, "densities", dens)
        channels = tuple(str(c) for c in self.channels)
        problem = channels_problem(channels)
        if problem:
            raise MfhpoError(f"{src}: {problem}")
        object.__setattr__(self, "channels", channels)

    def __hash__(self) -> int:
        return hash(self.key())

    # ----------------------------------------------------------------------------------------
    @property
    def nfeat(self) -> int:
        return len(self.columns) * len(self.channels)

    def channel_settings(self) -> list[GMPSetting]:
        """One single-channel setting per channel (densities rescaled); their features, concatenated
        in this order, are this setting's features."""
        if self.channels == ("valence",):
            return [self]
        return [replace(self, channels=("valence",),
                        densities={el: channel_density(el, self.densities[el], c) for el in self.elements})
                for c in self.channels]

    def inv_rs(self, sigma: float) -> float:
        """``1/rs`` of a column with this sigma (spec section 3)."""
        if self.rs_setup.get("setup", "constant") == "scale":
            return 1.0 / (float(self.rs_setup["scale_factor"]) * sigma)
        return 1.0 / float(self.rs_setup.get("rs", 1.0))

    def to_dict(self) -> dict:
        return {
            "scheme": self.scheme,
            "columns": [list(c) for c in self.columns],
            "cutoff": self.cutoff,
            "cutoff_function": self.cutoff_function,
            "square": bool(self.square),
            "rs_setup": dict(self.rs_setup),
            "solid_harmonics": bool(self.solid_harmonics),
            "elements": list(self.elements),
            "densities": {el: [list(self.densities[el][0]), list(self.densities[el][1])] for el in self.elements},
            "channels": list(self.channels),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> GMPSetting:
        return cls(
            scheme=d["scheme"], columns=tuple(tuple(c) for c in d["columns"]), cutoff=d["cutoff"],
            cutoff_function=d.get("cutoff_function", "hard"), square=bool(d.get("square", False)),
            rs_setup=d.get("rs_setup", {"setup": "constant", "rs": 1.0}),
            solid_harmonics=bool(d.get("solid_harmonics", False)), elements=tuple(d["elements"]),
            densities={el: (tuple(v[0]), tuple(v[1])) for el, v in d["densities"].items()},
            channels=tuple(d.get("channels", ("valence",))),
        )

    def key(self) -> str:
        """Stable hex hash of everything that affects the values (density numbers, not paths)."""
        d = self.to_dict()
        rs = d["rs_setup"]
        # only what matters numerically
        if self.scheme == "gmpordernorm" and self.solid_harmonics:
            d["rs_setup"] = None
        else:
            d["rs_setup"] = {"setup": rs.get("setup", "constant"),
                             "value": float(rs["scale_factor"] if rs.get("setup") == "scale" else rs.get("rs", 1.0))}
        if self.scheme == "gmp":
            d["solid_harmonics"] = False
        if self.channels == ("valence",):
            del d["channels"]  # keys of single-channel settings are those of earlier versions
        d["version"] = DEFINITION_VERSION
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def describe(self) -> str:
        orders = sorted({c[0] for c in self.columns})
        chans = "" if self.channels == ("valence",) else f", channels {'+'.join(self.channels)}"
        return (f"{self.scheme}: {self.nfeat} features{chans}, orders {orders}, cutoff {self.cutoff:g} Å "
                f"({self.cutoff_function}), square={self.square}, {len(self.elements)} elements")

    # ----------------------------------------------------------------------------------------
    # constructors
    # ----------------------------------------------------------------------------------------
    @classmethod
    def from_amptorch_json(cls, path: str | Path) -> GMPSetting:
        path = Path(path)
        if not path.exists():
            raise MfhpoError(f"{path}: file not found")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise MfhpoError(f"{path}: cannot read ({type(exc).__name__})") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MfhpoError(f"{path}: invalid JSON (line {exc.lineno}: {exc.msg})") from None
        return cls.from_amptorch_dict(d, path.parent, source=str(path))

    @classmethod
    def from_amptorch_dict(cls, d: Any, base_dir: str | Path | None = None, source: str = "<setting>") -> GMPSetting:
        """AMPTorch's ``{"fp_scheme", "fp_params", "elements"}``; ``.g`` paths relative to ``base_dir``."""
        src = source
        base = Path(base_dir) if base_dir is not None else Path(".")
        if not isinstance(d, Mapping):
            raise MfhpoError(f"{src}: top level must be a JSON object")
        if "fp_scheme" not in d:
            raise MfhpoError(f"{src}: missing key 'fp_scheme' ('gmp' or 'gmpordernorm')")
        scheme = d["fp_scheme"]
        if scheme not in ("gmp", "gmpordernorm"):
            raise MfhpoError(f"{src}: fp_scheme: must be 'gmp' or 'gmpordernorm', got {scheme!r}")
        if "fp_params" not in d:
            raise MfhpoError(f"{src}: missing key 'fp_params'")
        fp = d["fp_params"]
        if not isinstance(fp, Mapping):
            raise MfhpoError(f"{src}: fp_params: must be an object")

        # columns
        if scheme == "gmp":
            columns = _gmp_columns(fp, src)
        else:
            columns = _ordernorm_columns(fp, src)

        # elements and densities
        ag = fp.get("atom_gaussians")
        if ag is not None and not isinstance(ag, Mapping):
            raise MfhpoError(f"{src}: fp_params.atom_gaussians: must map element -> .g file path")
        elements = d.get("elements")
        if elements is None:
            if ag is None:
                raise MfhpoError(f"{src}: missing key 'elements' (required when fp_params.atom_gaussians is absent)")
            elements = sorted(ag)
        if not isinstance(elements, (list, tuple)) or not elements:
            raise MfhpoError(f"{src}: elements: must be a non-empty list of element symbols")
        for el in elements:
            if not isinstance(el, str) or not known_symbol(el):
                raise MfhpoError(f"{src}: elements: unknown element symbol {el!r}")
        densities = {}
        if ag is None:
            if scheme == "gmp":
                raise MfhpoError(f"{src}: missing key 'fp_params.atom_gaussians' (required for fp_scheme gmp)")
            densities = {el: default_density(el) for el in elements}
        else:
            for el in elements:
                if el not in ag:
                    raise MfhpoError(f"{src}: fp_params.atom_gaussians: no density file for element {el}")
                p = Path(ag[el])
                if not p.is_absolute():
                    p = base / p
                try:
                    densities[el] = read_g_file(p)
                except MfhpoError as exc:
                    raise MfhpoError(f"{src}: fp_params.atom_gaussians.{el}: {exc}") from None

        # cutoff
        if "cutoff" in fp:
            cutoff = fp["cutoff"]
            if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not cutoff > 0:
                raise MfhpoError(f"{src}: fp_params.cutoff: must be a positive number (Å), got {cutoff!r}")
        elif scheme == "gmp":
            raise MfhpoError(f"{src}: missing key 'fp_params.cutoff' (required for fp_scheme gmp)")
        else:
            cutoff = default_ordernorm_cutoff(max(c[2] for c in columns))

        square = fp.get("square", scheme == "gmpordernorm")
        if not isinstance(square, (bool, int)):
            raise MfhpoError(f"{src}: fp_params.square: must be true or false")
        solid = fp.get("solid_harmonics", True) if scheme == "gmpordernorm" else False
        rs = fp.get("rs_setup", {"setup": "constant", "rs": 1.0})
        _check_rs(rs, f"{src}: fp_params.rs_setup")
        cf = fp.get("cutoff_function", "hard")  # mfhpo extension
        if cf not in ("hard", "cosine"):
            raise MfhpoError(f"{src}: fp_params.cutoff_function: must be 'hard' or 'cosine', got {cf!r}")
        return cls(scheme=scheme, columns=tuple(columns), cutoff=float(cutoff), cutoff_function=cf,
                   square=bool(square), rs_setup=dict(rs), solid_harmonics=bool(solid),
                   elements=tuple(elements), densities=densities)

    @classmethod
    def from_descriptor(cls, desc, elements: Iterable[str], base_dir: str | Path | None = None) -> GMPSetting:
        """From :class:`mfhpo.config.DescriptorConfig` for the given elements."""
        elements = sorted(set(elements))
        if not elements:
            raise MfhpoError("descriptor: no elements given")
        columns = []
        for n in sorted(desc.orders):
            spec = desc.orders[n]
            sigmas = spec.sigmas if spec.sigmas is not None else desc.sigmas
            if desc.scheme == "gmp":
                if n not in GMP_GROUPS:
                    raise MfhpoError(f"descriptor: orders.{n}: order {n} is not available for scheme gmp (0-5)")
                groups = GMP_GROUPS[n] if spec.groups == "all" else list(spec.groups)
                for g in groups:
                    if g not in GMP_GROUPS[n]:
                        raise MfhpoError(f"descriptor: orders.{n}.groups: order {n} has no group {g}")
                    for s in sigmas:
                        columns.append((n, g, float(s)))
            else:
                for s in sigmas:
                    columns.append((n, 0, float(s)))
        if desc.densities == "default":
            densities = {el: default_density(el) for el in elements}
        else:
            p = Path(desc.densities)
            if not p.is_absolute() and base_dir is not None:
                p = Path(base_dir) / p
            try:
                densities = load_density_dir(p, elements)
            except MfhpoError as exc:
                raise MfhpoError(f"descriptor.densities: {exc}") from None
        _check_rs(desc.rs_setup, "descriptor.rs_setup")
        return cls(scheme=desc.scheme, columns=tuple(columns), cutoff=float(desc.cutoff),
                   cutoff_function=desc.cutoff_function, square=bool(desc.square), rs_setup=dict(desc.rs_setup),
                   solid_harmonics=desc.scheme == "gmpordernorm", elements=tuple(elements), densities=densities,
                   channels=tuple(desc.channels))


# --------------------------------------------------------------------------------------------
def _check_rs(rs: Any, src: str) -> None:
    if not isinstance(rs, Mapping):
        raise MfhpoError(f"{src}: rs_setup must be an object")
    setup = rs.get("setup", "constant")
    if setup == "constant":
        v = rs.get("rs", 1.0)
        name = "rs"
    elif setup == "scale":
        if "scale_factor" not in rs:
            raise MfhpoError(f"{src}: rs_setup: 'scale' needs 'scale_factor'")
        v = rs["scale_factor"]
        name = "scale_factor"
    else:
        raise MfhpoError(f"{src}: rs_setup.setup: must be 'constant' or 'scale', got {setup!r}")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise MfhpoError(f"{src}: rs_setup.{name}: must be a positive number, got {v!r}")


def _sigmas(v: Any, where: str) -> list[float]:
    if not isinstance(v, (list, tuple)) or not v:
        raise MfhpoError(f"{where}: must be a non-empty list of positive numbers (Å)")
    for s in v:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0:
            raise MfhpoError(f"{where}: must be a non-empty list of positive numbers (Å), got {s!r}")
    return [float(s) for s in v]


def _groups(v: Any, order: int, where: str) -> list[int]:
    if not isinstance(v, (list, tuple)) or not v:
        raise MfhpoError(f"{where}: must be a non-empty list of group numbers")
    for g in v:
        if isinstance(g, bool) or not isinstance(g, int) or g not in GMP_GROUPS[order]:
            raise MfhpoError(f"{where}: order {order} has no group {g!r} (groups {GMP_GROUPS[order]})")
    return list(v)


def _order(k: Any, where: str, max_order: int) -> int:
    try:
        n = int(k)
    except (TypeError, ValueError):
        raise MfhpoError(f"{where}: order must be an integer, got {k!r}") from None
    if isinstance(k, bool) or str(n) != str(k).strip() or not 0 <= n <= max_order:
        raise MfhpoError(f"{where}: order {k!r} is not available (0-{max_order})")
    return n


def _gmp_columns(fp: Mapping, src: str) -> list:
    cols = []
    if "MCSHs_detailed_list" in fp:
        lst = fp["MCSHs_detailed_list"]
        if not isinstance(lst, list) or not lst:
            raise MfhpoError(f"{src}: fp_params.MCSHs_detailed_list: must be a non-empty list")
        for k, item in enumerate(lst):
            where = f"{src}: fp_params.MCSHs_detailed_list[{k}]"
            if not isinstance(item, Mapping) or not {"order", "group", "sigmas"} <= set(item):
                raise MfhpoError(f"{where}: needs keys order, group, sigmas")
            n = _order(item["order"], where + ".order", mcsh.GMP_MAX_ORDER)
            g = _groups([item["group"]], n, where + ".group")[0]
            for s in _sigmas(item["sigmas"], where + ".sigmas"):
                cols.append((n, g, s))
        return cols
    if "MCSHs" not in fp:
        raise MfhpoError(f"{src}: missing key 'fp_params.MCSHs'")
    m = fp["MCSHs"]
    if not isinstance(m, Mapping) or not m:
        raise MfhpoError(f"{src}: fp_params.MCSHs: must be a non-empty object with order keys '0'..'5'")
    if "orders" in m:
        raise MfhpoError(f"{src}: fp_params.MCSHs.orders: is GMPOrderNorm syntax; fp_scheme gmp needs per-order keys '0'..'5'")
    orders = {}
    for k, v in m.items():
        where = f"{src}: fp_params.MCSHs.{k}"
        n = _order(k, where, mcsh.GMP_MAX_ORDER)
        if not isinstance(v, Mapping):
            raise MfhpoError(f"{where}: must be an object with 'groups' and 'sigmas'")
        for key in ("groups", "sigmas"):
            if key not in v:
                raise MfhpoError(f"{where}: missing key '{key}'")
        orders[n] = (_groups(v["groups"], n, where + ".groups"), _sigmas(v["sigmas"], where + ".sigmas"))
    for n in sorted(orders):
        groups, sigmas = orders[n]
        for g in groups:
            for s in sigmas:
                cols.append((n, g, s))
    return cols


def _ordernorm_columns(fp: Mapping, src: str) -> list:
    if "MCSHs" not in fp:
        raise MfhpoError(f"{src}: missing key 'fp_params.MCSHs'")
    m = fp["MCSHs"]
    if not isinstance(m, Mapping) or "orders" not in m or "sigmas" not in m:
        raise MfhpoError(f"{src}: fp_params.MCSHs: gmpordernorm needs keys 'orders' and 'sigmas'")
    orders = m["orders"]
    if not isinstance(orders, list) or not orders:
        raise MfhpoError(f"{src}: fp_params.MCSHs.orders: must be a non-empty list of orders 0-9")
    ns = [_order(o, f"{src}: fp_params.MCSHs.orders", mcsh.ORDERNORM_MAX_ORDER) for o in orders]
    sigmas = _sigmas(m["sigmas"], f"{src}: fp_params.MCSHs.sigmas")
    return [(n, 0, s) for n in ns for s in sigmas]
