"""The Python API of a study, under ``mfhpo run``, ``mfhpo status`` and ``mfhpo incumbent``::

    import mfhpo

    study = mfhpo.Study.from_yaml("spaces/demo.yaml", rundir="runs/demo")
    study.optimize(trials=12, workers=2, callbacks=[lambda t: print(t.trial_id, t.status.value, t.cost)])
    print(len(study.trials), study.best_trial.trial_id, study.best_trial.cost)
    export = study.export_incumbent("runs/demo/incumbent")

A study is its YAML file and its run directory; everything it knows is read back from the run
directory (``trials/<id>/trial.json``), so a ``Study`` opened on a directory another process ran, or
is running, sees the same trials. ``optimize`` runs or resumes the study (SMAC over Dask workers,
the run-directory lock held) and returns when its limits are reached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Optional

from mfhpo.study.config import StudyConfig, load_study
from mfhpo.study.rundir import RunDir
from mfhpo.study.trial import TrialRecord, select_incumbent


class Study:
    """A study: its configuration (``spaces/*.yaml``) and its run directory."""

    def __init__(self, config: StudyConfig, rundir: Path | str | None = None, optimizer: Optional[str] = None):
        self.config = config
        self.rundir = Path(rundir) if rundir is not None else Path("runs") / config.name
        self.optimizer = optimizer

    @classmethod
    def from_yaml(cls, path: Path | str, rundir: Path | str | None = None, optimizer: Optional[str] = None) -> "Study":
        """Read and validate the study file (:class:`~mfhpo.errors.MfhpoError` naming file and key)."""
        return cls(load_study(Path(path)), rundir, optimizer)

    def optimize(self, trials: Optional[int] = None, workers: Optional[int] = None,
                 callbacks: Iterable[Callable[[TrialRecord], None]] = (), progress: bool = False) -> "Study":
        """Run, or resume, the study until ``trials`` (default: the study's ``budget.trials``) have
        finished or another limit is reached. Each callback gets every :class:`TrialRecord` as it
        finishes, in the driver process."""
        from mfhpo.study.runner import run_command

        run_command(self.config.path, trials=trials, workers=workers, optimizer=self.optimizer, rundir=self.rundir,
                    progress=progress, callbacks=tuple(callbacks))
        return self

    @property
    def trials(self) -> list[TrialRecord]:
        """Every trial of the run directory (any status), by trial id."""
        return RunDir(self.rundir).trial_records()

    @property
    def best_trial(self) -> Optional[TrialRecord]:
        """The incumbent (:func:`~mfhpo.study.trial.select_incumbent`, the rule ``mfhpo status``,
        ``mfhpo incumbent`` and reports use), or None before a trial succeeded."""
        return select_incumbent(self.trials)

    def export_incumbent(self, out: Path | str | None = None, *, evaluate_test: bool = True):
        """Export the incumbent's configuration, checkpoint and bundle (``mfhpo incumbent``);
        returns :class:`~mfhpo.study.incumbent.IncumbentExport`."""
        from mfhpo.study.incumbent import export_incumbent

        return export_incumbent(self.rundir, Path(out) if out is not None else None, evaluate_test=evaluate_test)
