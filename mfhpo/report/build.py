"""Assemble a report: figures (PNG files + embedded copies), tables, HTML and Markdown."""

from __future__ import annotations

import base64
import html
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mfhpo.errors import MfhpoError  # noqa: E402
from mfhpo.report import figures, parity, tables  # noqa: E402
from mfhpo.report.importance import METHOD, study_importance  # noqa: E402
from mfhpo.report.load import StudyResults, load_study  # noqa: E402


@dataclass
class Block:
    """A piece of a section: a figure (file under figures/), a table, or a paragraph."""

    kind: str  # "figure" | "table" | "text"
    title: str = ""
    path: Path | None = None  # figure file
    table: tables.Table | None = None
    text: str = ""


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    anchor: str = ""


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "study"


class Writer:
    def __init__(self, out: Path):
        self.out = Path(out)
        self.figdir = self.out / "figures"
        self.figdir.mkdir(parents=True, exist_ok=True)
        self.figures: list[Path] = []

    def figure(self, fig, name: str, title: str) -> Block | None:
        if fig is None:
            return None
        path = self.figdir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        self.figures.append(path)
        return Block("figure", title=title, path=path)


class _Predictions:
    """The incumbent's parity-plot predictions (torch import, featurization, a forward pass: seconds
    of CPU) computed in a forked worker process while this one draws the figures; inline where fork
    is not available or the worker fails."""

    def __init__(self, study: StudyResults):
        self.study = study
        self.pool = self.job = None
        if study.incumbent() is None:
            return
        try:
            import multiprocessing as mp

            self.pool = mp.get_context("fork").Pool(1)
            self.job = self.pool.apply_async(parity.incumbent_predictions, (study,))
        except (ValueError, OSError):
            self.pool = None

    def get(self):
        if self.job is not None:
            try:
                return self.job.get(timeout=1800)
            except Exception:  # worker died or could not pickle: compute here
                pass
            finally:
                self.pool.terminate()
        return parity.incumbent_predictions(self.study)


def _study_section(study: StudyResults, slug: str, w: Writer) -> tuple[Section, object]:
    sec = Section(f"Study {study.name}", anchor=slug)
    pending = _Predictions(study)
    add = sec.blocks.append
    t = study.trials
    partial = "" if len(t) else " (no finished trial yet)"
    add(Block("table", title=f"Overview{partial}", table=tables.overview(study)))
    for n in study.notes:
        add(Block("text", text=f"Note: {n}."))
    inc = study.incumbent()
    if inc is None:
        add(Block("text", text="No successful trial yet: nothing else to show."))
        return sec, None
    add(Block("table", title="Incumbent: validation metrics", table=tables.incumbent_metrics(study)))
    add(Block("table", title="Incumbent: configuration", table=tables.incumbent_config(study)))

    def fig(make, name, title, *args):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                b = w.figure(make(study, *args), f"{slug}_{name}", title)
        except Exception as exc:  # one bad figure must not kill the report
            add(Block("text", text=f"Figure '{title}' failed: {type(exc).__name__}: {exc}"))
            return
        if b is not None:
            add(b)
        else:
            add(Block("text", text=f"Figure '{title}': not enough data yet."))

    fig(figures.progress, "progress", "Best validation result vs compute")
    fig(figures.budgets, "budgets", "Trials per budget and Hyperband promotions")
    add(Block("table", title="Rungs", table=tables.rung_table(study)))
    fig(figures.learning_curves, "learning_curves", "Learning curves of the top configurations")
    fig(figures.energy_force_front, "energy_force_front", "Energy vs force error: the Pareto front of the top budget")
    top = tables.top_table(study)
    if top is not None:
        add(Block("table", title="Top trials", table=top))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp, info = study_importance(study)
    except Exception as exc:
        imp, info = None, {}
        add(Block("text", text=f"Importance failed: {type(exc).__name__}: {exc}"))
    order = None if imp is None or imp.empty else ["cfg." + h for h in imp["hp"]]
    fig(figures.configurations, "configurations", "Configurations (parallel coordinates)", order)
    if imp is not None and not imp.empty:
        fig(figures.importance, "importance", "Hyperparameter importance", imp, info)
        r2 = info.get("r2_oob", float("nan"))
        if not r2 >= 0.3:
            add(Block("text", text=f"Note: the surrogate explains little of the cost variance (out-of-bag R² = "
                      f"{r2:.2f}, {info.get('data', '')}); these importances are not reliable yet "
                      "(too few trials, or noise dominates)."))
        add(Block("table", title="Hyperparameter importance", table=tables.importance_table(imp, info)))
    elif imp is not None:
        add(Block("text", text=f"Hyperparameter importance: too few successful trials ({info.get('data', '')})."))
    preds = pending.get()
    if preds is not None:
        for n in preds.notes:
            add(Block("text", text=f"Note: {n}."))
        if preds.splits:
            fig(parity.parity_figure, "parity", "Incumbent: predicted vs reference", preds)
            fig(parity.size_figure, "error_vs_size", "Incumbent: energy error vs number of atoms", preds)
            val = [s for s in preds.splits if s.name == "validation"]
            if val:
                m = parity.split_metrics(val[0])
                for key in ("energy_mae_per_atom", "force_mae_free"):
                    col = f"val_{key}"
                    if key in m and col in inc.index and inc[col] == inc[col] and inc[col] > 0:
                        rel = abs(m[key] - inc[col]) / inc[col]
                        if rel > 0.02 and not val[0].note:
                            add(Block("text", text=f"Warning: the validation {key} recomputed for the parity plot "
                                      f"({m[key]:.4g}) differs from the trial table ({inc[col]:.4g}) by "
                                      f"{100 * rel:.0f} %: the rebuilt split may not be the trained one."))
            add(Block("table", title="Incumbent on each split (recomputed from the parity-plot predictions)",
                      table=tables.split_table(preds.splits)))
    return sec, imp


def build_report(rundirs: list[Path], out: Path, embed: bool = True) -> dict:
    """Write report.html, summary.md and figures/ under ``out``; return paths and studies.

    ``embed``: figures inside report.html as data URIs (one self-contained file); otherwise
    report.html links ``figures/*.png`` (a much smaller file, e.g. for a report kept in git)."""
    if not rundirs:
        raise MfhpoError("report: give at least one run directory")
    studies = [load_study(r) for r in rundirs]
    names = [s.name for s in studies]
    for s in studies:  # two runs of one study file (e.g. --rundir): tell them apart by run directory
        if names.count(s.name) > 1:
            s.name = f"{s.name} ({Path(s.rundir).name})"
    w = Writer(out)
    sections, imps, slugs = [], [], []
    for s in studies:
        slug = _slug(s.name)
        while slug in slugs:
            slug += "_2"
        slugs.append(slug)
        sec, imp = _study_section(s, slug, w)
        sections.append(sec)
        imps.append(imp)
    if len(studies) > 1:
        cross = Section("Across studies", anchor="across")
        cross.blocks.append(Block("table", title="Incumbent metrics next to baselines",
                                  table=tables.cross_metrics(studies)))
        reach = tables.compute_to_reach(studies)
        if reach is not None:
            cross.blocks.append(Block("table", title="Compute to match another study's final result", table=reach))
        cross.blocks.append(Block("table", title="Optimal hyperparameters and their importance",
                                  table=tables.cross_hyperparameters(studies, imps)))
        b = w.figure(figures.cross_progress(studies), "all_studies_progress", "Incumbent vs compute, all studies")
        if b:
            cross.blocks.append(b)
        sections.insert(0, cross)
    sections.append(Section("Metric definitions", [
        Block("text", text="Energies in eV (per structure) or eV/atom; forces in eV/Å per Cartesian component. "
              "'free atoms' = atoms not held by an ASE FixAtoms constraint (the OC20 scoring convention); "
              "'all atoms' includes the fixed ones, with their raw (unconstrained) reference forces. "
              "Compute: epoch-equivalents = epochs run × training-subset fraction; worker-hours = sum of "
              f"trial wall times (GPU-hours where trials ran on GPUs). Importance: {METHOD}."),
        Block("table", table=tables.definitions())], anchor="definitions"))
    title = "mfhpo report: " + ", ".join(s.name for s in studies)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    html_path = w.out / "report.html"
    html_path.write_text(render_html(title, stamp, sections, w.out, embed))
    md_path = w.out / "summary.md"
    md_path.write_text(render_markdown(title, stamp, sections, w.out))
    return {"html": html_path, "markdown": md_path, "figures": w.figures, "studies": studies}


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1250px;color:#222;
line-height:1.4;padding:0 16px}
h1{font-size:1.6em;border-bottom:2px solid #345;padding-bottom:4px}h2{margin-top:2em;border-bottom:1px solid #aaa}
h3{margin-bottom:4px;color:#345}table{border-collapse:collapse;margin:6px 0 14px;font-size:0.85em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#eef2f6}
.tw{max-width:100%;overflow-x:auto}
p.cap{font-style:italic;color:#555;margin:2px 0;font-size:0.85em;max-width:1000px}
figure{margin:10px 0 18px}img{max-width:100%;border:1px solid #ddd}figcaption{font-size:0.8em;color:#666}
p.note{background:#fff8e1;border-left:4px solid #f0b400;padding:4px 8px;font-size:0.9em}
nav a{margin-right:14px}
"""


def render_html(title: str, stamp: str, sections: list[Section], out: Path, embed: bool = True) -> str:
    e = html.escape
    how = ("Self-contained: figures are embedded; the same PNG files are in <code>figures/</code>." if embed
           else "Figures are linked from <code>figures/</code>: keep that folder next to this file.")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{e(title)}</h1>",
             f"<p>Generated {e(stamp)} by <code>mfhpo report</code>. {how} Numbers come from each study's "
             "<code>trials.csv</code>.</p><nav>"]
    parts += [f"<a href='#{e(s.anchor)}'>{e(s.title)}</a>" for s in sections]
    parts.append("</nav>")
    for s in sections:
        parts.append(f"<h2 id='{e(s.anchor)}'>{e(s.title)}</h2>")
        for b in s.blocks:
            if b.kind == "figure":
                rel = b.path.relative_to(out).as_posix()
                src = f"data:image/png;base64,{base64.b64encode(b.path.read_bytes()).decode()}" if embed else rel
                parts.append(f"<figure><h3>{e(b.title)}</h3><img alt='{e(b.title)}' data-file='{e(rel)}' "
                             f"src='{e(src)}'><figcaption>{e(rel)}</figcaption></figure>")
            elif b.kind == "table" and b.table is not None:
                if b.title:
                    parts.append(f"<h3>{e(b.title)}</h3>")
                parts.append(b.table.html())
            elif b.kind == "text":
                cls = " class='note'" if b.text.startswith(("Note", "Warning", "Figure", "Importance")) else ""
                parts.append(f"<p{cls}>{e(b.text)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(title: str, stamp: str, sections: list[Section], out: Path) -> str:
    lines = [f"# {title}", "", f"Generated {stamp} by `mfhpo report`; figures in `figures/`, full report in "
             "`report.html`.", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for b in s.blocks:
            if b.kind == "figure":
                rel = b.path.relative_to(out).as_posix()
                lines += [f"![{b.title}]({rel})", ""]
            elif b.kind == "table" and b.table is not None:
                if b.title:
                    lines += [f"### {b.title}", ""]
                lines += [b.table.markdown(), ""]
            elif b.kind == "text":
                lines += [b.text, ""]
    return "\n".join(lines)
