"""Everything a study can be checked for before its first trial (``mfhpo run`` calls this before any
cluster starts; ``mfhpo run STUDY --check`` prints it and stops).

* :func:`corner_flats` / :func:`check_corners`: every categorical choice and both ends of every range
  materialised into a :class:`~mfhpo.config.TrialConfig` (with the parents that make a conditional
  parameter active), so that an invalid value is named by file and ``space.<key>`` now, not when a
  trial happens to draw it on a worker.
* :func:`check_elements`: the GMP setting of every distinct corner descriptor built for the data's
  elements (density files, channels).
* :func:`budget_ladder`: the Hyperband rungs as epochs and training subset, with any rounding stated.
* :func:`check_study`: the ``--check`` report (data, corners, ladder, cluster, job script).

Data files themselves are validated when loaded (:mod:`mfhpo.data`: elements, coordinate and cell
bounds, labels per frame).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from mfhpo.errors import MfhpoError
from mfhpo.study.config import StudyConfig
from mfhpo.study.space import SpaceSpec, _max_layers, default_flat, materialize


@dataclass(frozen=True)
class Corner:
    """One corner configuration: which value of which ``space`` key it exercises."""

    key: str  # the space key, e.g. "activation", "nodes"
    value: Any  # the value exercised (a choice, low or high)
    flat: dict  # flat configuration (searched + fixed) that materialize() takes

    @property
    def label(self) -> str:
        return f"space.{self.key} = {self.value!r}" if self.key else "the defaults"


def _activate(spec: SpaceSpec, name: str, flat: dict) -> None:
    """Set the parents of a conditional parameter so that ``name`` is active in ``flat``."""
    p = spec.params
    if name.startswith("nodes") and "num_layers" in p:
        flat["num_layers"] = _max_layers(spec)
    if name.startswith("groups_") and "max_order" in p:
        k = int(name.split("_")[1])
        mo = p["max_order"]
        top = mo.value if mo.kind == "fixed" else mo.high
        if int(top) >= k:
            flat["max_order"] = max(k, int(flat.get("max_order", 0)))
    if name in ("step_size", "gamma") and "scheduler" in p:
        flat["scheduler"] = "step"
    if name == "plateau_patience" and "scheduler" in p:
        flat["scheduler"] = "plateau"
    if p.get(name) is not None and p[name].or_zero:
        flat[f"{name}_on"] = "on"


def corner_flats(spec: SpaceSpec) -> list[Corner]:
    """The defaults, then every choice of every categorical and both ends of every range."""
    base = default_flat(spec)
    out = [Corner("", None, dict(base))]
    for p in spec.tunable():
        values = list(p.choices) if p.kind == "cat" else [p.low, p.high]
        for v in values:
            flat = dict(base)
            _activate(spec, p.name, flat)
            if p.kind == "int":
                v = int(v)
            if p.name == "nodes":
                for k in range(1, _max_layers(spec) + 1):
                    flat[f"nodes_{k}"] = v
            else:
                flat[p.name] = v
            out.append(Corner(p.name, v, flat))
        if p.or_zero:
            flat = dict(base)
            flat[f"{p.name}_on"] = "off"
            out.append(Corner(f"{p.name}", "off (0)", flat))
    return out


def check_corners(study: StudyConfig, spec: SpaceSpec, source: Optional[str] = None) -> list[tuple[Corner, Any]]:
    """Materialise every corner; the first failure becomes one line naming the file and space key."""
    source = source or str(study.path)
    done = []
    for c in corner_flats(spec):
        try:
            cfg = materialize(study, spec, c.flat)
        except MfhpoError as exc:
            if not c.key:
                raise MfhpoError(default_failure(spec, source, str(exc))) from None
            raise MfhpoError(f"{source}: {_where(c)}: {_strip(str(exc))}") from None
        except (TypeError, ValueError) as exc:
            raise MfhpoError(f"{source}: {_where(c)}: not a usable value ({exc})") from None
        done.append((c, cfg))
    return done


# TrialConfig fields that several space parameters feed
_FIELD_PARAMS = {"hidden_layers": ("nodes", "num_layers"),
                 "sigmas": ("sigmas", "sigma_min", "sigma_max", "sigma_count", "sigma_spacing"),
                 "orders": ("max_order", "groups_2", "groups_3", "groups_4", "groups_5")}


def culprit(spec: SpaceSpec, msg: str) -> Optional[str]:
    """The space key behind a trial-config error ``... <section>.<field>[.<index>]: ...``, or None."""
    import re

    m = re.search(r"\b(descriptor|model|training)\.([A-Za-z_]+)", msg)
    if not m:
        return None
    for name in _FIELD_PARAMS.get(m.group(2), (m.group(2),)):
        if name in spec.params:
            return name
    return None


def _spec_text(p) -> str:
    if p.kind == "fixed":
        return f"value {p.value!r}"
    if p.kind == "cat":
        return f"choices {p.choices!r}"
    return f"low {p.low!r}, high {p.high!r}" + (", log" if p.log else "")


def default_failure(spec: SpaceSpec, source: str, msg: str) -> str:
    """The one line for a default configuration that does not validate, naming the space key."""
    name = culprit(spec, msg)
    if name is None:
        return f"{source}: {_strip(msg)}"
    return f"{source}: space.{name} ({_spec_text(spec.params[name])}): gives an invalid {_strip(msg)}"


def _where(c: Corner) -> str:
    return f"space.{c.key}: value {c.value!r}" if c.key else "space/fixed defaults"


def _strip(msg: str) -> str:
    return msg.replace("materialized config: ", "trial config ", 1)


def check_elements(study: StudyConfig, corners: list[tuple[Corner, Any]], elements: list[str],
                   data_label: str) -> int:
    """Build the GMP setting (and its density channels) of every distinct corner descriptor for the
    data's elements; returns how many distinct descriptors were built."""
    from mfhpo.gmp.setting import GMPSetting

    seen: set[str] = set()
    for c, cfg in corners:
        key = cfg.descriptor.model_dump_json()
        if key in seen:
            continue
        seen.add(key)
        try:
            setting = GMPSetting.from_descriptor(cfg.descriptor, elements, base_dir=study.base_dir)
            setting.channel_settings()
        except MfhpoError as exc:
            raise MfhpoError(f"{study.path}: {_where(c)}: elements of {data_label} ({', '.join(elements)}): "
                             f"{exc}") from None
    return len(seen)


# --------------------------------------------------------------------------------------------
# budget ladder
# --------------------------------------------------------------------------------------------


def budget_ladder(fid) -> list[dict]:
    """The rungs Hyperband uses: SMAC budget -> epochs and subset, with the unrounded epochs."""
    from mfhpo.study.fidelity import _interp, _position, budget_to_fidelity, rungs

    out = []
    for b in rungs(fid):
        fb = budget_to_fidelity(fid, b)
        t = _position(float(b), fid.min_budget, fid.max_budget, fid.epochs.scale)
        exact = _interp(t, fid.epochs.min, fid.epochs.max, fid.epochs.scale)
        out.append({"budget": b, "epochs": fb.epochs, "epochs_exact": exact, "subset_fraction": fb.subset_fraction,
                    "rounded": not math.isclose(exact, fb.epochs, abs_tol=1e-9), "fidelity": fb})
    return out


def ladder_lines(fid) -> list[str]:
    lad = budget_ladder(fid)
    lines = []
    for r in lad:
        note = f"  (epochs {r['epochs_exact']:.4g} rounded to {r['epochs']})" if r["rounded"] else ""
        fb = r["fidelity"]
        if fb.subset_schedule is None:
            what = f"{r['epochs']} epochs on {r['subset_fraction']:.4g} of the training split"
        else:  # curriculum: the epochs of each phase on its subset
            what = f"{r['epochs']} epochs: " + ", ".join(
                f"{e0 + 1}-{e1} on {f:.4g}" for e0, e1, f in fb.phases()) + " of the training split"
        lines.append(f"  budget {r['budget']:.4g}: {what}{note}")
    pairs = [(r["epochs"], r["subset_fraction"]) for r in lad]
    if len(set(pairs)) < len(pairs):
        lines.append("  warning: two rungs train the same epochs on the same subset (widen fidelity.epochs)")
    powers = math.log(fid.max_budget / fid.min_budget) / math.log(fid.eta)
    if 0 < round(powers) - powers < 1e-6 and lad[0]["budget"] > fid.min_budget * (1 + 1e-6):
        lines.append(f"  note: SMAC's lowest rung is {lad[0]['budget']:.4g}, not min_budget {fid.min_budget:.4g}: "
                     "log(max_budget / min_budget) / log(eta) rounds down just below a whole number in floating "
                     "point (nudge max_budget up slightly to keep min_budget)")
    return lines


def rounding_note(fid) -> Optional[str]:
    """One line when some rung's epochs are rounded (printed by ``mfhpo run``), else None."""
    lad = [r for r in budget_ladder(fid) if r["rounded"]]
    if not lad:
        return None
    return ("budgets are not whole epochs; rounded: "
            + ", ".join(f"budget {r['budget']:.4g} -> {r['epochs']} epochs ({r['epochs_exact']:.4g})" for r in lad))


# --------------------------------------------------------------------------------------------
# mfhpo run --check
# --------------------------------------------------------------------------------------------


@dataclass
class CheckReport:
    """What ``mfhpo run STUDY --check`` found: the study, its counts and the lines it shows."""

    study: Any
    corners: int
    ladder: list
    cluster: Any
    provenance: dict
    lines: list[str] = field(default_factory=list)


def check_optimizer_kind(kind: str) -> None:
    """One-line error for an optimizer mfhpo does not have, or one whose package is not installed."""
    import importlib.util

    from mfhpo.study.optimizers import KINDS
    from mfhpo.study.optuna_pipeline import NEEDS_OPTUNA

    if kind not in KINDS:
        raise MfhpoError(f"--optimizer: must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "optuna-tpe-hb" and importlib.util.find_spec("optuna") is None:
        raise MfhpoError(NEEDS_OPTUNA)


def check_study(study_path: Path, *, workers: Optional[int] = None, optimizer: Optional[str] = None,
                rundir: Optional[Path] = None) -> CheckReport:
    """``mfhpo run STUDY --check``: validate everything a run would (data, corners, ladder, cluster,
    credentials) without running a trial; the report's ``lines`` describe it."""
    from mfhpo.study.clusters import job_script, load_cluster_config, local_worker_plan
    from mfhpo.study.config import load_study
    from mfhpo.study.rundir import RunDir
    from mfhpo.study.runner import data_paths, data_provenance
    from mfhpo.study.space import build_space_spec

    study = load_study(study_path)
    kind = optimizer or study.optimizer
    check_optimizer_kind(kind)
    spec = build_space_spec(study, str(study.path))
    corners = check_corners(study, spec)
    root = Path(rundir) if rundir is not None else Path("runs") / study.name
    with tempfile.TemporaryDirectory(prefix="mfhpo-check-") as tmp:
        # generated demo data go to a scratch folder: --check writes nothing into the run directory
        paths = data_paths(study, RunDir(Path(tmp)))
        prov = data_provenance(study, paths)
    elements = prov["train"]["elements"]
    n_desc = check_elements(study, corners, elements, Path(paths["train"]).name)
    ccfg = load_cluster_config(study.cluster, source=str(study.path))
    if workers is not None:
        ccfg = ccfg.with_workers(workers)
    from mfhpo.study.security import check_security_files

    check_security_files(ccfg, study.base_dir, source=str(study.path))

    lines: list[str] = []
    lines.append(f"study {study.name} ({study.path}): optimizer {kind}, mode {study.mode}, cost = {study.metric.describe()}")
    tr = prov["train"]
    sp = prov["split"]
    lines.append(f"data: {Path(paths['train']).name if tr.get('generated_demo') else paths['train']}: "
          f"{tr['n_structures']} structures, elements {', '.join(elements)}, hash {tr['hash']}; split "
          f"{sp['n_train']} train / {sp['n_val']} val / {sp['n_test']} test")
    if prov.get("test"):
        lines.append(f"test file: {prov['test']['path']}: {prov['test']['n_structures']} structures")
    lines.append(f"search space: {len(spec.tunable())} searched parameter(s); {len(corners)} corner configurations "
          f"materialised, {n_desc} distinct descriptor(s) built for the data's elements")
    lines.append("budget ladder (Hyperband rungs):")
    lines.extend(ladder_lines(study.fidelity))
    b = study.optimizer_options.brackets
    if kind == "smac-mf" and b != 1:
        from mfhpo.study.fidelity import rungs

        starts = rungs(study.fidelity)[:None if b == "all" else b]
        lines.append(f"brackets: {len(starts)} (asynchronous Hyperband): new configurations start at budget "
                     f"{', '.join(f'{x:.4g}' for x in starts)}, each in the bracket given the least budget so far")
    lines.append(f"run directory: {root}")
    if ccfg.is_job_cluster:
        n = (f"adaptive {ccfg.adaptive.minimum}..{ccfg.adaptive.maximum}" if ccfg.adaptive
             else str(ccfg.jobs if ccfg.jobs is not None else 1))
        lines.append(f"cluster: {ccfg.kind}, jobs {n}, {ccfg.gpus_per_job} GPU / {ccfg.cpus_per_job} CPU / {ccfg.memory} "
              f"per job, walltime {ccfg.walltime}, security {security_label(ccfg)}; job script:")
        with tempfile.TemporaryDirectory(prefix="mfhpo-check-") as tmp:
            # dask-jobqueue creates the log directory when it renders a script: render it in a scratch
            # folder, then show the run directory's paths
            script = job_script(ccfg, rundir=Path(tmp) / "run", base_dir=study.base_dir)
            lines.append(script.replace(str(Path(tmp) / "run"), str(root)))
    else:
        plan = local_worker_plan(ccfg)
        gpus = [p["gpu"] for p in plan if p["gpu"] is not None]
        lines.append(f"cluster: local, {len(plan)} worker(s)" + (f" on GPU(s) {', '.join(gpus)}" if gpus else " on the CPU")
              + f", security {security_label(ccfg)}")
    lines.append("check passed: no trial was run")
    return CheckReport(study, len(corners), budget_ladder(study.fidelity), ccfg, prov, lines)


def security_label(ccfg) -> str:
    from mfhpo.study.security import describe

    return describe(ccfg)


# --------------------------------------------------------------------------------------------
# data at the start of a run
# --------------------------------------------------------------------------------------------


def preflight_data(study: StudyConfig, spec: SpaceSpec, paths: dict, state: dict, root: Path,
                   corners: Optional[list] = None) -> Optional[dict]:
    """Before any worker: on a new study load and validate the data (returns its provenance with file
    hashes); on a resume refuse data files that changed since the study started (returns None). Both
    then build every corner descriptor for the data's elements (``corners``: ``check_corners``'s
    result when the caller has it)."""
    from mfhpo.study.datafiles import record_file_hashes, refuse_changed_data
    from mfhpo.study.runner import data_provenance

    old = (state.get("provenance") or {}).get("data")
    prov = None
    if old is not None:
        added = refuse_changed_data(old, paths, study_path=study.path, root=root)
        for role, h in (added or {}).items():
            old[role]["file_sha256"] = h  # older run directory: record now, compare from here on
        elements = old["train"]["elements"]
    else:
        prov = record_file_hashes(data_provenance(study, paths), paths)
        elements = prov["train"]["elements"]
    corners = check_corners(study, spec) if corners is None else corners
    check_elements(study, corners, elements, Path(paths["train"]).name)
    return prov
