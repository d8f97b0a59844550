"""End to end: ``mfhpo run`` of a small study whose trials run as real Slurm jobs.

Uses the study engine's cheap ``objective: toy`` (no training), so the test measures the cluster
plumbing: jobs come up, trials run inside them, a ``scancel`` mid-trial is recorded CRASHED and
the study still finishes, and no job is left in the queue afterwards. Skips without Slurm.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from test_cluster_slurm import slurm  # noqa: F401  (fixture: starts / checks the local Slurm)

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(420)]


def _study(tmp_path: Path, name: str, job_name: str, *, trials: int, sleep_s: float, cluster: str) -> Path:
    y = tmp_path / f"{name}.yaml"
    y.write_text(textwrap.dedent(f"""\
        name: {name}
        data: {{train: demo, demo_structures: 20}}
        space:
          lr: {{low: 0.0001, high: 0.01, log: true}}
          num_layers: {{low: 1, high: 2}}
          nodes: {{low: 4, high: 16}}
        fidelity: {{min_budget: 1, max_budget: 9, eta: 3, epochs: {{min: 1, max: 9}}}}
        budget: {{trials: {trials}}}
        optimizer: random
        objective: toy
        toy: {{sleep_fixed_s: {sleep_s}}}
        cluster:
          kind: slurm
          partition: debug
          walltime: "00:15:00"
          gpus_per_job: 0
          cpus_per_job: 1
          memory: 1GB
          interface: lo
          dashboard_port: 0
          death_timeout: 60
          job_name: {job_name}
        {textwrap.indent(cluster, "  ")}
        """))
    return y


def _our_jobs(prefix: str) -> list[tuple[str, str]]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True).stdout
    return [tuple(ln.split(None, 1)) for ln in out.splitlines() if ln.split(None, 1)[-1].startswith(prefix + "-")]


def _wait_gone(prefix: str, timeout: float = 30) -> list:
    t0 = time.monotonic()
    left = _our_jobs(prefix)
    while left and time.monotonic() - t0 < timeout:
        time.sleep(0.5)
        left = _our_jobs(prefix)
    return left


def _rows(rundir: Path) -> list[dict]:
    with open(rundir / "trials.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _run(study: Path, rundir: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "mfhpo.cli", "run", str(study), "--rundir", str(rundir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=study.parent, env=env)


def _finish(p: subprocess.Popen, timeout: float) -> str:
    """Wait for ``mfhpo run``; if it hangs, interrupt it (its close() cancels the jobs) and fail."""
    try:
        out, _ = p.communicate(timeout=timeout)
        return out
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGINT)
        try:
            out, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        pytest.fail(f"mfhpo run did not finish within {timeout:.0f} s; last output:\n{out[-2000:]}")


def test_study_on_slurm_finishes(slurm, tmp_path):
    prefix = f"e2e{uuid.uuid4().hex[:4]}"
    study = _study(tmp_path, "slurm_e2e", prefix, trials=4, sleep_s=1.0, cluster="jobs: 2")
    rundir = tmp_path / "rd"
    t0 = time.monotonic()
    p = _run(study, rundir)
    out = _finish(p, 180)
    dt = time.monotonic() - t0
    print(f"\n[measure] e2e study (4 toy trials, 2 Slurm jobs) took {dt:.1f} s")
    assert p.returncode == 0, out[-3000:]
    print(out[-1500:])
    assert "Dask dashboard: http" in out and "from your laptop: ssh -N -L" in out
    rows = _rows(rundir)
    assert len(rows) == 4 and all(r["status"] == "SUCCESS" for r in rows), rows
    # every trial ran on a Dask worker of a dask-jobqueue Slurm job
    assert all("SLURMCluster" in r["worker"] for r in rows), [r["worker"] for r in rows]
    assert len({r["worker"] for r in rows}) == 2
    logs = sorted((rundir / "cluster-logs").glob(f"{prefix}-*.err"))
    assert len(logs) == 2, logs
    left = _wait_gone(prefix)
    assert not left, f"jobs left in the queue: {left}"


def test_study_on_slurm_survives_scancel_mid_trial(slurm, tmp_path):
    """One adaptive job; cancel it while trial 2 runs: trial 2 -> CRASHED, a replacement job
    comes, the study finishes its budget, finished trials are kept, no job remains."""
    prefix = f"e2k{uuid.uuid4().hex[:4]}"
    study = _study(tmp_path, "slurm_kill", prefix, trials=3, sleep_s=2.5,
                   cluster="adaptive: {minimum: 1, maximum: 1}")
    rundir = tmp_path / "rd"
    t0 = time.monotonic()
    p = _run(study, rundir)
    killed = None
    try:
        t_wait = time.monotonic()
        while time.monotonic() - t_wait < 180 and p.poll() is None:
            if (rundir / "trials" ).is_dir() and len([d for d in (rundir / "trials").iterdir() if d.is_dir()]) >= 2:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # trial 2 is now running on the only job
        jobs = _our_jobs(prefix)
        assert len(jobs) == 1, jobs
        killed = jobs[0][0]
        subprocess.run(["scancel", killed], check=True)
    except BaseException:
        p.kill()
        raise
    out = _finish(p, 180)
    dt = time.monotonic() - t0
    print(f"\n[measure] e2e study with scancel mid-trial took {dt:.1f} s")
    assert p.returncode == 0, out[-3000:]
    rows = _rows(rundir)
    status = {int(r["trial_id"]): r["status"] for r in rows}
    assert len(rows) == 3, status
    assert status[1] == "SUCCESS"
    crashed = [t for t, s in status.items() if s == "CRASHED"]
    assert crashed == [2], status
    tj = next((rundir / "trials").glob("*2/trial.json"))
    rec = json.loads(tj.read_text())
    assert "KilledWorker" in str(rec.get("error")) or "died" in str(rec.get("error")), rec.get("error")
    # the trials after the kill ran on the replacement job
    assert status[3] == "SUCCESS"
    left = _wait_gone(prefix)
    assert not left, f"jobs left in the queue: {left}"


def test_ctrl_c_of_a_slurm_study_is_one_line_and_leaves_no_job(slurm, tmp_path):
    """Ctrl-C (SIGINT to the process group) of ``mfhpo run`` with Slurm workers: exit code 130, one line
    with the resume command (dask-jobqueue's own SIGINT handler would exit 0 silently), no job left."""
    prefix = f"e2c{uuid.uuid4().hex[:4]}"
    study = _study(tmp_path, "slurm_int", prefix, trials=20, sleep_s=2.0, cluster="jobs: 1")
    rundir = tmp_path / "rd"
    p = subprocess.Popen([sys.executable, "-m", "mfhpo.cli", "run", str(study), "--rundir", str(rundir)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                         start_new_session=True)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 180:
            line = p.stdout.readline()
            if not line or line.startswith("[mfhpo] trial 1 "):
                break
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    lines = err.strip().splitlines()
    assert p.returncode == 130, err[-3000:]
    assert len(lines) == 1 and "interrupted; finished trials are saved, resume with: mfhpo run" in lines[0], err
    left = _wait_gone(prefix)
    assert not left, f"jobs left in the queue: {left}"
