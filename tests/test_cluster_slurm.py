"""dask-jobqueue against a REAL single-node Slurm (scripts/start_slurm.sh).

Skips with the reason when Slurm cannot be started (not root, no apt-get, no slurmctld). Everything
runs on 127.0.0.1 (``interface: lo``). Each worker job asks for 1 CPU: CI machines have 2 cores.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mfhpo.study.clusters import ClusterConfig, job_script, queued_jobs, start_cluster

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]



def _slurm_up() -> bool:
    if not shutil.which("scontrol") or not shutil.which("sbatch"):
        return False
    r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    if "is UP" not in r.stdout:
        return False
    st = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20).stdout
    return any(s.startswith(("idle", "mix", "alloc", "completing")) for s in st.split())


@pytest.fixture(scope="module")
def slurm():
    if not _slurm_up():
        if os.geteuid() != 0:
            pytest.skip("no running Slurm and not root: scripts/start_slurm.sh cannot start one")
        r = subprocess.run(["bash", str(REPO / "scripts" / "start_slurm.sh")], capture_output=True, text=True,
                           timeout=600)
        if not _slurm_up():
            why = (r.stdout + r.stderr).strip().splitlines()[-1:] or ["no output"]
            pytest.skip(f"Slurm could not be started by scripts/start_slurm.sh: {why[0]}")
    return True


def _cfg(**kw) -> ClusterConfig:
    base = dict(kind="slurm", partition="debug", walltime="00:10:00", gpus_per_job=0, cpus_per_job=1,
                memory="1GB", interface="lo", dashboard_port=0, death_timeout=60,
                # the prologue runs in each job before the worker starts: let it import this module
                job_script_prologue=[f"export PYTHONPATH={Path(__file__).parent}:${{PYTHONPATH:-}}",
                                     "export MFHPO_TEST_PROLOGUE=ran"])
    base.update(kw)
    return ClusterConfig(**base)


def _squeue_ids(job_name: str) -> set[str]:
    return set(queued_jobs("slurm", job_name))


def _wait_no_jobs(job_name: str, timeout: float = 30) -> set[str]:
    t0 = time.monotonic()
    left = _squeue_ids(job_name)
    while left and time.monotonic() - t0 < timeout:
        time.sleep(0.5)
        left = _squeue_ids(job_name)
    return left


def _job_task(i: int, seconds: float):
    t0 = time.time()
    time.sleep(seconds)
    return {"i": i, "job": os.environ.get("SLURM_JOB_ID"), "start": t0, "end": time.time(),
            "cpus": os.environ.get("SLURM_CPUS_PER_TASK"), "prologue": os.environ.get("MFHPO_TEST_PROLOGUE")}


def test_slurm_cluster_runs_trials_inside_jobs(slurm, tmp_path):
    t0 = time.monotonic()
    h = start_cluster(_cfg(jobs=2), tmp_path)
    try:
        assert h.wait_for_slots(2, timeout=120) == 2, f"workers did not come up: {h.summary()}"
        t_up = time.monotonic() - t0
        print(f"\n[measure] 2 Slurm worker jobs connected after {t_up:.1f} s")
        ids = set(h.job_ids())
        assert len(ids) == 2
        assert ids <= _squeue_ids(h.job_name), "the worker jobs are not in squeue"
        st = subprocess.run(["squeue", "-h", "-o", "%i %j %T", "-j", ",".join(ids)], capture_output=True,
                            text=True).stdout
        assert st.count("RUNNING") == 2 and h.job_name in st
        assert h.dashboard_link.startswith("http://")
        assert h.tunnel_command and h.tunnel_command.startswith("ssh -N -L ")

        futs = [h.client.submit(_job_task, i, 1.0, resources={"trial": 1}, pure=False) for i in range(4)]
        res = h.client.gather(futs)
        assert {r["job"] for r in res} <= ids and len({r["job"] for r in res}) == 2
        assert all(r["cpus"] == "1" and r["prologue"] == "ran" for r in res)
        # one trial at a time per job
        for job in ids:
            spans = sorted((r["start"], r["end"]) for r in res if r["job"] == job)
            assert all(a[1] <= b[0] + 1e-3 for a, b in zip(spans, spans[1:])), spans
        logs = list((tmp_path / "cluster-logs").glob("*.err"))
        assert logs, "no worker logs under <rundir>/cluster-logs"
    finally:
        h.close()
    left = _wait_no_jobs(h.job_name)
    assert not left, f"jobs left in the queue after close(): {left}"
    assert h.n_slots() == 0


def test_scancel_mid_task_fails_the_task_and_adaptive_replaces_the_job(slurm, tmp_path):
    h = start_cluster(_cfg(adaptive={"minimum": 2, "maximum": 2}), tmp_path)
    try:
        assert h.wait_for_slots(2, timeout=120) == 2, h.summary()
        first_ids = set(h.job_ids())
        victim = h.client.submit(_job_task, 0, 120.0, resources={"trial": 1}, pure=False)
        other = h.client.submit(_job_task, 1, 8.0, resources={"trial": 1}, pure=False)
        # find the job whose worker runs the victim
        job = None
        for _ in range(100):
            proc = h.client.processing()
            addr = next((a for a, keys in proc.items() if victim.key in keys), None)
            if addr:
                job = h.client.run(lambda: os.environ["SLURM_JOB_ID"], workers=[addr])[addr]
                break
            time.sleep(0.1)
        assert job in first_ids
        time.sleep(1.0)
        t_kill = time.monotonic()
        subprocess.run(["scancel", job], check=True)
        from distributed.scheduler import KilledWorker

        with pytest.raises((KilledWorker, OSError, Exception)) as ei:  # must error, not hang
            victim.result(timeout=90)
        t_err = time.monotonic() - t_kill
        print(f"\n[measure] scancel -> future errored ({type(ei.value).__name__}) after {t_err:.1f} s")
        assert not isinstance(ei.value, TimeoutError), "the task hung instead of failing"
        assert type(ei.value).__name__ in ("KilledWorker", "CommClosedError", "FutureCancelledError"), ei.value
        r = other.result(timeout=60)  # the other work finishes
        assert r["job"] != job
        # adaptive mode submits a replacement job
        assert h.wait_for_slots(2, timeout=150) == 2, h.summary()
        t_rep = time.monotonic() - t_kill
        print(f"[measure] replacement worker up {t_rep:.1f} s after scancel")
        new_ids = set(h.job_ids()) - first_ids
        assert new_ids, "no replacement job was submitted"
        res = h.client.gather([h.client.submit(_job_task, i, 0.5, resources={"trial": 1}, pure=False)
                               for i in range(2, 4)])
        assert {x["job"] for x in res} <= (first_ids | new_ids) - {job}
        assert job not in _squeue_ids(h.job_name)
    finally:
        h.close()
    left = _wait_no_jobs(h.job_name)
    assert not left, f"jobs left in the queue after close(): {left}"


_CHILD = r"""
import sys, time
from pathlib import Path
from mfhpo.study.clusters import ClusterConfig, start_cluster, install_signal_handlers
if __name__ == "__main__":
    install_signal_handlers()
    cfg = ClusterConfig(kind="slurm", partition="debug", walltime="00:10:00", gpus_per_job=0, cpus_per_job=1,
                        memory="1GB", interface="lo", dashboard_port=0, jobs=1)
    h = start_cluster(cfg, Path(sys.argv[1]))
    h.wait_for_slots(1, timeout=120)
    print("READY", h.job_name, ",".join(h.job_ids()), flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)          # no close(): the atexit hook must cancel the job
    time.sleep(600)          # interrupted by the test
"""


@pytest.mark.parametrize("how", ["exit", "SIGINT", "SIGTERM"])
def test_no_orphaned_jobs_on_exit_or_interrupt(slurm, tmp_path, how):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    p = subprocess.Popen([sys.executable, str(script), str(tmp_path / "rd"), "exit" if how == "exit" else "wait"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = ""
        t0 = time.monotonic()
        while time.monotonic() - t0 < 150:
            line = p.stdout.readline()
            if line.startswith("READY") or not line:
                break
        assert line.startswith("READY"), f"child did not get a worker: {line!r} {p.stderr.read()[-2000:] if p.poll() is not None else ''}"
        _, job_name, ids = line.split()
        assert ids and set(ids.split(",")) <= _squeue_ids(job_name) | set(ids.split(","))
        if how != "exit":
            p.send_signal(getattr(signal, how))
        p.wait(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
    left = _wait_no_jobs(job_name)
    assert not left, f"{how}: jobs left in the queue: {left}"


def test_rejected_submission_is_a_one_line_error(slurm, tmp_path):
    from mfhpo.errors import MfhpoError

    t0 = time.monotonic()
    with pytest.raises(MfhpoError) as ei:
        start_cluster(_cfg(partition="no_such_partition", jobs=1, job_name="mfhpo-bad"), tmp_path)
    msg = str(ei.value)
    assert "\n" not in msg and "invalid partition" in msg.lower() and "cluster.queue" in msg, msg
    assert time.monotonic() - t0 < 60


_FAKE_PBS = {
    # qsub SCRIPT -> sbatch it; prints "<id>.fakepbs" like PBS. sbatch would read #PBS lines itself
    # (it understands some), so they are disarmed first.
    "qsub": r"""#!/usr/bin/env bash
name=$(sed -n 's/^#PBS -N //p' "$1" | head -n1)
tmp=$(mktemp); sed 's/^#PBS/# PBS/' "$1" > "$tmp"
id=$(sbatch --parsable -J "$name" -p debug -n 1 --cpus-per-task=1 --mem=1G -t 10 \
     -o "${MFHPO_FAKE_PBS_LOG:-/tmp}/$name-%j.out" "$tmp") || { rm -f "$tmp"; exit 1; }
rm -f "$tmp"
echo "$id.fakepbs"
""",
    "qdel": "#!/usr/bin/env bash\nexec scancel \"${@%%.*}\"\n",
    "qselect": r"""#!/usr/bin/env bash
u=""; n=""
while [ $# -gt 0 ]; do case "$1" in -u) u=$2; shift 2;; -N) n=$2; shift 2;; *) shift;; esac; done
squeue -h -u "$u" -n "$n" -o %i | sed 's/$/.fakepbs/'
""",
}


def test_pbs_cluster_through_qsub_shim(slurm, tmp_path, monkeypatch):
    """The PBS path of dask-jobqueue (qsub / job-id parsing / qdel) with qsub, qdel and qselect
    shims that hand the job to the real Slurm: the worker runs in a real batch job."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in _FAKE_PBS.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("MFHPO_FAKE_PBS_LOG", str(tmp_path))
    cfg = ClusterConfig(kind="pbs", pbs_style="torque", queue="batch", walltime="00:10:00", gpus_per_job=0,
                        cpus_per_job=1, memory="1GB", jobs=1, interface="lo", dashboard_port=0,
                        job_script_prologue=[f"export PYTHONPATH={Path(__file__).parent}:${{PYTHONPATH:-}}"])
    script = job_script(cfg)
    assert "#PBS -l nodes=1:ppn=1" in script
    h = start_cluster(cfg, tmp_path / "rd")
    try:
        assert h.wait_for_slots(1, timeout=120) == 1, h.summary()
        (jid,) = h.job_ids()  # dask-jobqueue keeps the number of "<n>.fakepbs"
        r = h.client.submit(_job_task, 0, 0.2, resources={"trial": 1}, pure=False).result(timeout=60)
        assert r["job"] == jid
        assert queued_jobs("pbs", h.job_name) == [f"{jid}.fakepbs"]
    finally:
        h.close()
    left = _wait_no_jobs(h.job_name)
    assert not left, f"jobs left after close(): {left}"


def _connect(addr: str, **kw) -> bool:
    from distributed import Client

    try:
        c = Client(addr, timeout=4, **kw)
    except Exception:  # noqa: BLE001 - any refusal
        return False
    c.close()
    return True


def test_slurm_scheduler_and_workers_need_the_study_credentials(slurm, tmp_path):
    """Default ``security: tls``: the worker job connects over TLS with the per-run credentials written
    into <rundir>/security (0700 folder, 0600 files; the job script names the files, never a key), and a
    client without them cannot connect."""
    from distributed.security import Security

    h = start_cluster(_cfg(jobs=1), tmp_path)
    try:
        assert h.wait_for_slots(1, timeout=120) == 1, h.summary()
        addr = h.client.scheduler.address
        assert addr.startswith("tls://")
        workers = list(h.client.scheduler_info()["workers"])
        assert workers and all(w.startswith("tls://") for w in workers)
        sec = tmp_path / "security"
        assert sec.stat().st_mode & 0o777 == 0o700
        files = list(sec.iterdir())
        assert files and all(f.stat().st_mode & 0o077 == 0 for f in files)
        script = h.cluster.job_script()
        assert f"--tls-key {sec}" in script and "PRIVATE KEY" not in script
        # the study's own client runs work inside the job; outsiders are refused
        r = h.client.submit(_job_task, 0, 0.1, resources={"trial": 1}, pure=False).result(timeout=60)
        assert r["job"] in h.job_ids()
        assert not _connect(addr.replace("tls://", "tcp://")), "a plain-TCP client connected"
        assert not _connect(addr, security=Security.temporary()), "a client with foreign credentials connected"
    finally:
        h.close()
    assert not _wait_no_jobs(h.job_name)


def test_mfhpo_run_with_a_gres_the_partition_lacks_prints_one_line(slurm, tmp_path):
    """``sbatch: error: Invalid generic resource`` (a GPU job on a partition without GPUs) ends
    ``mfhpo run`` with one line and exit 2, not tornado's traceback."""
    gres = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%G"], capture_output=True, text=True).stdout
    if "gpu" in gres:
        pytest.skip(f"partition debug has GPUs ({gres.strip()}): the job would be accepted")
    study = tmp_path / "gpu.yaml"
    study.write_text(
        "name: gpu\ndata: {train: demo, demo_structures: 12}\nspace: {lr: {low: 0.001, high: 0.01}}\n"
        "fidelity: {min_budget: 1, max_budget: 3, eta: 3, epochs: {min: 1, max: 3}}\nbudget: {trials: 1}\n"
        "objective: toy\ncluster: {kind: slurm, partition: debug, gpus_per_job: 1, cpus_per_job: 1, memory: 1GB,\n"
        "  walltime: '00:05:00', interface: lo, dashboard_port: 0, job_name: mfhpo-gres}\n")
    r = subprocess.run([sys.executable, "-m", "mfhpo.cli", "run", str(study), "--rundir", str(tmp_path / "run")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=180)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(lines) == 1 and "could not be submitted" in lines[0] and "generic resource" in lines[0], r.stderr
