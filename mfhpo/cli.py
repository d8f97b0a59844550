"""The ``mfhpo`` command. Each subcommand is a thin wrapper that imports its module lazily (so
``mfhpo --help`` is fast) and turns :class:`~mfhpo.errors.MfhpoError` into one line on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from mfhpo.errors import MfhpoError

def _featurize_options(share_chunks: Optional[bool], chunk_mb: Optional[float], chunk_pairs: Optional[int],
                       layout: Optional[str] = None):
    """The ``--share-chunks``, ``--chunk-mb``, ``--chunk-pairs`` and ``--chunk-layout`` flags as FeaturizeOptions."""
    from mfhpo.gmp.featurizer import FeaturizeOptions

    return FeaturizeOptions(share_chunks=share_chunks, chunk_mb=chunk_mb, chunk_pairs=chunk_pairs, layout=layout)


SHARE_CHUNKS = typer.Option(None, "--share-chunks/--no-share-chunks",
                            help="GMP: several small structures per chunk, or one per chunk (default: shared; "
                                 "one per chunk for the greedy layout on the CPU)")
LAYOUT = typer.Option(None, "--chunk-layout", help="GMP: blocked (CPU default: bitwise the same features however structures "
                                             "share chunks) or greedy (CUDA default; older checkpoints)")
CHUNK_MB = typer.Option(None, "--chunk-mb", help="GMP: MB of per-pair buffers per chunk (default 48 CPU, 256 CUDA)")
CHUNK_PAIRS = typer.Option(None, "--chunk-pairs", help="GMP: pairs per chunk, overrides --chunk-mb (tuning)")

app = typer.Typer(
    help="Multi-fidelity Bayesian hyperparameter optimization for GMP + SingleNN interatomic potentials.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def featurize(
    structures: Path = typer.Argument(..., help="ASE-readable file (traj, extxyz, db) or MD17 .npz"),
    setting: Path = typer.Option(..., "--setting", help="AMPTorch-style setting JSON (fp_scheme, fp_params, elements)"),
    out: Path = typer.Option(..., "--out", help="output .npz (natoms, layout, fp_000, ... [, pair_i_000, pair_j_000, dfp_000, ...])"),
    derivatives: bool = typer.Option(False, "--derivatives", help="also write d fp / d r (sparse: per (i, j) pair)"),
    dense: bool = typer.Option(False, "--dense", help="derivatives as dense (natoms, nfeat, natoms, 3) arrays"),
    dtype: str = typer.Option("float64", help="float64 or float32"),
    device: str = typer.Option("cpu", help="cpu, cuda or auto"),
    share_chunks: Optional[bool] = SHARE_CHUNKS,
    chunk_mb: Optional[float] = CHUNK_MB,
    chunk_pairs: Optional[int] = CHUNK_PAIRS,
    layout: Optional[str] = LAYOUT,
) -> None:
    """Compute GMP fingerprints for every frame of STRUCTURES."""
    from mfhpo.gmp.command import featurize_file

    typer.echo(featurize_file(structures, setting, out, derivatives=derivatives, dtype=dtype, device=device,
                              dense=dense, options=_featurize_options(share_chunks, chunk_mb, chunk_pairs, layout)).summary())


@app.command("demo-data")
def demo_data(
    out: Path = typer.Argument(..., help="output file (extxyz or traj)"),
    n: int = typer.Option(240, "--n", help="number of structures"),
    seed: int = typer.Option(1, help="random seed (studies use demo_seed 0; the default 1 gives structures "
                                     "disjoint from their training data)"),
) -> None:
    """Write the built-in EMT demo dataset (metal slabs with C/H/O adsorbates)."""
    from mfhpo.demo import STUDY_SEED, write_demo

    path = write_demo(out, n_structures=n, seed=seed)
    typer.echo(f"wrote {n} structures to {path}")
    if seed == STUDY_SEED:
        typer.echo(f"note: seed {STUDY_SEED} is the demo study's: its first demo_structures frames are the "
                   "study's training data")


@app.command()
def train(
    config: Path = typer.Argument(..., help="trial config YAML (descriptor, model, training, split)"),
    data: Path = typer.Option(..., "--data", help="training data file"),
    out: Path = typer.Option(..., "--out", help="output directory (metrics.json, checkpoint.pt, ...)"),
    epochs: Optional[int] = typer.Option(None, help="override training.epochs"),
    subset: float = typer.Option(1.0, help="fraction of the training split to use (nested subsets)"),
    subset_schedule: Optional[str] = typer.Option(
        None, "--subset-schedule", help="a growing subset, EPOCH:FRACTION,... from epoch 0 (ends at --subset); "
                                        "as a study's curriculum fidelity trains"),
    device: Optional[str] = typer.Option(None, help="override training.device"),
    init_checkpoint: Optional[Path] = typer.Option(None, "--init-checkpoint", help="continue from this checkpoint"),
    share_chunks: Optional[bool] = SHARE_CHUNKS,
    chunk_mb: Optional[float] = CHUNK_MB,
    chunk_pairs: Optional[int] = CHUNK_PAIRS,
    layout: Optional[str] = LAYOUT,
) -> None:
    """Train one SingleNN potential and write its metrics and checkpoint."""
    from mfhpo.train import train_command

    train_command(config, data, out, epochs=epochs, subset=subset, device=device, init_checkpoint=init_checkpoint,
                  featurize=_featurize_options(share_chunks, chunk_mb, chunk_pairs, layout), subset_schedule=subset_schedule)


@app.command()
def evaluate(
    checkpoint: Path = typer.Argument(..., help="checkpoint.pt written by train or a study"),
    data: Path = typer.Argument(..., help="ASE-readable file to score"),
    json_: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    device: str = typer.Option("auto", help="cpu, cuda or auto"),
) -> None:
    """Score a checkpoint on a data file (energy / force MAE next to the baselines)."""
    from mfhpo.evaluate import evaluate_command

    evaluate_command(checkpoint, data, as_json=json_, device=device)


@app.command()
def run(
    study: Path = typer.Argument(..., help="study YAML (spaces/*.yaml)"),
    trials: Optional[int] = typer.Option(None, "--trials", help="override budget.trials"),
    workers: Optional[int] = typer.Option(None, "--workers", help="override cluster.workers (local)"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="override optimizer: smac-mf, smac-bo, random, optuna-tpe-hb"),
    rundir: Optional[Path] = typer.Option(None, "--rundir", help="run directory (default runs/<study name>)"),
    check: bool = typer.Option(False, "--check", help="validate data, space corners, budget ladder and cluster; "
                                                      "print them and exit without running a trial"),
) -> None:
    """Run (or resume) a study."""
    if check:
        from mfhpo.study.check import check_study

        for line in check_study(study, workers=workers, optimizer=optimizer, rundir=rundir).lines:
            typer.echo(line)
        return
    from mfhpo.study.lock import lock_for_study

    with lock_for_study(study, rundir):  # taken before the heavy imports: a second run exits at once
        from mfhpo.study.runner import run_command

        run_command(study, trials=trials, workers=workers, optimizer=optimizer, rundir=rundir, locked=True)


@app.command()
def status(rundir: Path = typer.Argument(..., help="runs/<study>")) -> None:
    """Summarise a study's trials and incumbent."""
    from mfhpo.study.status import status_command

    status_command(rundir)


@app.command()
def dashboard(
    rundir: Path = typer.Argument(..., help="runs/<study>"),
    port: int = typer.Option(8080, "--port", help="port on 127.0.0.1 (a free one when taken)"),
) -> None:
    """Serve optuna-dashboard on the study's live Optuna mirror (<rundir>/optuna/journal.log)."""
    from mfhpo.study.dashboard import open_dashboard

    server = open_dashboard(rundir, port=port)
    for line in server.lines():
        typer.echo(line)
    server.serve()


@app.command()
def incumbent(
    rundir: Path = typer.Argument(..., help="runs/<study>"),
    out: Optional[Path] = typer.Option(None, "--out", help="export directory (default <rundir>/incumbent)"),
) -> None:
    """Export the best configuration at the highest budget with its checkpoint and a reproducibility bundle."""
    from mfhpo.study.incumbent import incumbent_command

    incumbent_command(rundir, out)


@app.command()
def bundle(
    train_dir: Path = typer.Argument(..., help="output directory of `mfhpo train ... --out TRAIN_DIR`"),
    data: Path = typer.Option(..., "--data", help="the training file it was trained on (checked by hash)"),
    study: Optional[Path] = typer.Option(None, "--study", help="the study file that found the configuration"),
    out: Path = typer.Option(..., "--out", help="bundle directory (bundle.zip and its unpacked files)"),
) -> None:
    """Pack one training (e.g. a longer training of a study's incumbent) into a reproducibility bundle."""
    from mfhpo.study.bundle import bundle_training

    man = bundle_training(train_dir, data, study, out)
    val = man["chain"][0]["val"] or {}
    typer.echo(f"bundled {train_dir}: {man['epochs']} epochs, val energy MAE {val.get('energy_mae', float('nan')):.5g} eV, "
               f"force MAE (free atoms) {val.get('force_mae_free', float('nan')):.5g} eV/A")
    typer.echo(f"wrote {Path(out) / 'bundle.zip'} (reproduce: unzip, bash retrain.sh OUT --data {Path(data).name})")


@app.command()
def report(
    rundirs: List[Path] = typer.Argument(..., help="one or more runs/<study> directories"),
    out: Path = typer.Option(..., "--out", help="output directory for report.html, figures and summary.md"),
    link_figures: bool = typer.Option(False, "--link-figures",
                                      help="link figures/*.png from report.html instead of embedding them"),
) -> None:
    """Write an HTML + Markdown report for one or more studies."""
    from mfhpo.report.build import build_report

    res = build_report([Path(r) for r in rundirs], Path(out), embed=not link_figures)
    typer.echo(f"wrote {res['html']} ({len(res['figures'])} figures) and {res['markdown']}")


@app.command("cluster-script")
def cluster_script(study: Path = typer.Argument(..., help="study YAML")) -> None:
    """Print the batch job script the study's cluster section would submit."""
    from mfhpo.study.clusters import cluster_script

    typer.echo(cluster_script(study))


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors (and Ctrl-C outside ``mfhpo run``) are click's; MfhpoError becomes one
    line and its exit code (2 for bad input, 1 for a full disk, 130 for an interrupted study)."""
    try:
        app(args=argv)
    except MfhpoError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
