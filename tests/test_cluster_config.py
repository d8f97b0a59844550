"""The study's ``cluster:`` section: validation, job scripts, ``mfhpo cluster-script``, local cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mfhpo.errors import MfhpoError
from mfhpo.study.clusters import (
    ClusterConfig,
    job_script,
    load_cluster_config,
    local_worker_plan,
    start_cluster,
    tunnel_command,
)

REPO = Path(__file__).resolve().parents[1]


def _script(**kw) -> str:
    kw.setdefault("python", "python")
    return job_script(ClusterConfig(**kw))


# ---------------------------------------------------------------------------------------------
# job scripts
# ---------------------------------------------------------------------------------------------

def test_slurm_job_script_text():
    s = _script(
        kind="slurm", partition="gpu", account="chem-lab", walltime="1-02:00:00", cpus_per_job=8,
        memory="32GB", job_script_prologue=["module load cuda/12.1", "conda activate mfhpo"],
        job_extra_directives=["--constraint=a100"],
    )
    expected = textwrap.dedent("""\
        #!/usr/bin/env bash

        #SBATCH -J mfhpo
        #SBATCH -p gpu
        #SBATCH -A chem-lab
        #SBATCH -n 1
        #SBATCH --cpus-per-task=8
        #SBATCH --mem=30G
        #SBATCH -t 26:00:00
        #SBATCH --gres=gpu:1
        #SBATCH --constraint=a100
        module load cuda/12.1
        conda activate mfhpo
        python -m distributed.cli.dask_worker tls://SCHEDULER:PORT --name mfhpo-worker --nthreads 1 \
--memory-limit 29.80GiB --nanny --death-timeout 120 --resources trial=1,GPU=1 \
--protocol tls:// --tls-ca-file runs/STUDY/security/.dask-jobqueue.worker.ca_file.XXXX \
--tls-cert runs/STUDY/security/.dask-jobqueue.worker.cert.XXXX \
--tls-key runs/STUDY/security/.dask-jobqueue.worker.key.XXXX
        """)
    assert s == expected


def test_slurm_cpu_only_has_no_gres_and_no_gpu_resource():
    s = _script(kind="slurm", gpus_per_job=0, cpus_per_job=2, memory="4GB", security="off")
    assert "--gres" not in s
    assert "tcp://SCHEDULER:PORT" in s and "--tls" not in s  # security: off = plain TCP
    assert "--cpus-per-task=2" in s
    assert s.rstrip().endswith("--resources trial=1")
    assert "GPU=1" not in s


def test_pbs_pro_job_script_text():
    s = _script(kind="pbs", queue="inferno", account="GT-abc123", walltime="08:00:00", cpus_per_job=6,
                memory="24GB", job_script_prologue=["module load anaconda3", "conda activate mfhpo"], security="off")
    expected = textwrap.dedent("""\
        #!/usr/bin/env bash

        #PBS -N mfhpo
        #PBS -q inferno
        #PBS -A GT-abc123
        #PBS -l select=1:ncpus=6:ngpus=1:mem=24gb
        #PBS -l walltime=08:00:00
        module load anaconda3
        conda activate mfhpo
        python -m distributed.cli.dask_worker tcp://SCHEDULER:PORT --name mfhpo-worker --nthreads 1 \
--memory-limit 22.35GiB --nanny --death-timeout 120 --resources trial=1,GPU=1
        """)
    assert s == expected


def test_pbs_torque_job_script_uses_nodes_ppn_gpus():
    s = _script(kind="pbs", pbs_style="torque", queue="inferno", account="GT-abc123", walltime="12:00:00",
                cpus_per_job=6, memory="24GB")
    lines = s.splitlines()
    assert "#PBS -l nodes=1:ppn=6:gpus=1" in lines
    assert "#PBS -l mem=24gb" in lines
    assert "#PBS -l walltime=12:00:00" in lines
    assert "#PBS -q inferno" in lines and "#PBS -A GT-abc123" in lines
    assert "select=" not in s and "ngpus" not in s


def test_pbs_explicit_resource_spec_wins():
    s = _script(kind="pbs", pbs_style="torque", resource_spec="nodes=1:ppn=4:gpus=1:RTX6000")
    assert "#PBS -l nodes=1:ppn=4:gpus=1:RTX6000" in s.splitlines()


def test_sge_and_lsf_job_scripts():
    sge = _script(kind="sge", account="proj", cpus_per_job=4, walltime="02:00:00")
    assert "#$ -pe smp 4" in sge and "#$ -l gpu=1" in sge and "#$ -l h_rt=02:00:00" in sge
    assert "#$ -P proj" in sge
    lsf = _script(kind="lsf", walltime="02:30:00", cpus_per_job=4)
    assert "#BSUB -W 02:30" in lsf and '#BSUB -gpu "num=1"' in lsf and "#BSUB -n 4" in lsf


def test_local_has_no_job_script():
    with pytest.raises(MfhpoError, match="local"):
        job_script(ClusterConfig(kind="local"))


# ---------------------------------------------------------------------------------------------
# validation: errors name the key
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "mapping, key, words",
    [
        ({"kind": "slurm", "walltme": "01:00:00"}, "cluster.walltme", "unknown key"),
        ({"kind": "slurm", "walltime": "2h"}, "cluster.walltime", "HH:MM:SS"),
        ({"kind": "slurm", "walltime": "01:75:00"}, "cluster.walltime", "HH:MM:SS"),
        ({"kind": "kubernetes"}, "cluster.kind", "unknown kind"),
        ({"kind": "slurm", "memory": "lots"}, "cluster.memory", "16GB"),
        ({"kind": "slurm", "gpus_per_job": 2}, "cluster.gpus_per_job", "1"),
        ({"kind": "slurm", "jobs": 2, "adaptive": {"maximum": 4}}, "cluster.jobs", "not both"),
        ({"kind": "slurm", "adaptive": {"minimum": 5, "maximum": 2}}, "cluster.adaptive", "minimum"),
        ({"kind": "slurm", "workers": 3}, "cluster.workers", "jobs"),
        ({"kind": "local", "queue": "gpu"}, "cluster.queue", "job clusters"),
        ({"kind": "slurm", "pbs_style": "torque"}, "cluster.pbs_style", "pbs"),
        ({"kind": "local", "workers": 0}, "cluster.workers", "greater than or equal"),
    ],
)
def test_validation_errors_name_the_key(mapping, key, words):
    with pytest.raises(MfhpoError) as ei:
        load_cluster_config(mapping, source="spaces/x.yaml")
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"spaces/x.yaml: {key}"), msg
    assert words in msg, msg


def test_defaults_and_normalisation():
    c = load_cluster_config(None)
    assert c.kind == "local" and c.threads_per_worker == 1
    s = load_cluster_config({"kind": "slurm", "partition": "gpu", "cores": 6, "walltime": "2-00:00:00"})
    assert s.queue == "gpu" and s.cpus_per_job == 6 and s.walltime == "48:00:00"
    assert s.gpus_per_job == 1 and s.walltime_seconds() == 48 * 3600
    assert s.with_workers(3).jobs == 3
    assert c.with_workers(3).workers == 3


def test_local_worker_plan():
    assert [p["gpu"] for p in local_worker_plan(ClusterConfig(gpus=["0", "3"]))] == ["0", "3"]
    assert len(local_worker_plan(ClusterConfig(gpus=[], workers=3))) == 3
    assert len(local_worker_plan(ClusterConfig(gpus=[]))) == min(2, os.cpu_count() or 1)
    with pytest.raises(MfhpoError, match="cluster.workers"):
        local_worker_plan(ClusterConfig(gpus=["0"], workers=2))


def test_tunnel_command(monkeypatch):
    for var in ("SLURM_SUBMIT_HOST", "PBS_O_HOST", "SGE_O_HOST", "LSB_SUB_HOST", "MFHPO_LOGIN_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("USER", "alice")
    assert tunnel_command(ClusterConfig(kind="local"), 8787) is None
    # mfhpo itself runs as a batch job on a compute node: tunnel through the submit host
    monkeypatch.setattr("socket.gethostname", lambda: "atl1-1-02-003-5")
    monkeypatch.setenv("PBS_O_HOST", "login-phoenix-3.pace.gatech.edu")
    assert tunnel_command(ClusterConfig(kind="pbs"), 8787) == \
        "ssh -N -L 8787:atl1-1-02-003-5:8787 alice@login-phoenix-3.pace.gatech.edu"
    assert tunnel_command(ClusterConfig(kind="local"), 8800) == \
        "ssh -N -L 8800:atl1-1-02-003-5:8800 alice@login-phoenix-3.pace.gatech.edu"
    # scheduler on the login node itself
    monkeypatch.delenv("PBS_O_HOST")
    assert tunnel_command(ClusterConfig(kind="slurm", login_host="atl1-1-02-003-5.pace.gatech.edu"), 8787) == \
        "ssh -N -L 8787:localhost:8787 alice@atl1-1-02-003-5.pace.gatech.edu"


# ---------------------------------------------------------------------------------------------
# mfhpo cluster-script
# ---------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mfhpo.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_cluster_script_command_slurm(tmp_path):
    study = tmp_path / "mystudy.yaml"
    study.write_text(textwrap.dedent("""\
        name: cu_slab
        cluster:
          kind: slurm
          partition: gpu
          account: chem-lab
          walltime: "04:00:00"
          cpus_per_job: 8
          memory: 32GB
          adaptive: {minimum: 0, maximum: 8}
          job_script_prologue: ["module load cuda", "conda activate mfhpo"]
        """))
    r = _cli("cluster-script", str(study))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("# study cu_slab: slurm job script")
    assert "adaptive 0..8" in out
    for line in ["#SBATCH -p gpu", "#SBATCH -A chem-lab", "#SBATCH --cpus-per-task=8", "#SBATCH -t 04:00:00",
                 "#SBATCH --gres=gpu:1", "module load cuda", "conda activate mfhpo",
                 "#SBATCH -o runs/cu_slab/cluster-logs/mfhpo-%J.out"]:
        assert line in out.splitlines(), line
    assert "--resources trial=1,GPU=1" in out


def _cli_inproc(capsys, *args: str) -> tuple[int, str, str]:
    from mfhpo.cli import main

    try:
        main(list(args))
        rc = 0
    except SystemExit as exc:
        rc = exc.code or 0
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cluster_script_command_local_and_errors(tmp_path, capsys):
    study = tmp_path / "loc.yaml"
    study.write_text("name: loc\ncluster: {kind: local, workers: 2}\n")
    rc, out, err = _cli_inproc(capsys, "cluster-script", str(study))
    assert rc == 0 and "no batch job script" in out and "2 worker(s)" in out
    study.write_text("name: bad\ncluster: {kind: slurm, walltime: 3 hours}\n")
    rc, out, err = _cli_inproc(capsys, "cluster-script", str(study))
    assert rc == 2
    assert err.strip().startswith("error: ") and "cluster.walltime" in err and str(study) in err
    assert len(err.strip().splitlines()) == 1
    rc, out, err = _cli_inproc(capsys, "cluster-script", str(tmp_path / "missing.yaml"))
    assert rc == 2 and "missing.yaml" in err


def test_cluster_script_on_shipped_spaces(capsys):
    """Every shipped study YAML's cluster section is valid (there may be none yet)."""
    for y in sorted((REPO / "spaces").glob("*.yaml")):
        rc, out, err = _cli_inproc(capsys, "cluster-script", str(y))
        assert rc == 0, f"{y}: {err}"
        assert out.startswith("# study ")


# ---------------------------------------------------------------------------------------------
# a real local cluster
# ---------------------------------------------------------------------------------------------

def _task_env(_i):
    time.sleep(0.3)
    return os.environ.get("CUDA_VISIBLE_DEVICES"), os.getpid()


def test_local_cluster_one_trial_per_worker_and_gpu_pinning(tmp_path):
    # two pretend GPUs: each worker must see exactly its own CUDA_VISIBLE_DEVICES
    cfg = ClusterConfig(kind="local", gpus=["0", "1"], dashboard_port=0)
    h = start_cluster(cfg, tmp_path)
    try:
        assert h.n_slots() == 2
        assert h.dashboard_link.startswith("http://127.0.0.1:")
        assert h.tunnel_command is None or "ssh -N -L" in h.tunnel_command
        import dask

        assert dask.config.get("distributed.scheduler.allowed-failures") == 0
        workers = h.client.scheduler_info(n_workers=-1)["workers"].values()
        assert sorted(w["resources"]["GPU"] for w in workers) == [1, 1]
        futs = [h.client.submit(_task_env, i, resources={"trial": 1}, pure=False) for i in range(6)]
        res = h.client.gather(futs)
        by_pid = {}
        for gpu, pid in res:
            by_pid.setdefault(pid, set()).add(gpu)
        assert len(by_pid) == 2 and sorted(map(tuple, by_pid.values())) == [("0",), ("1",)]
        # at no time did one worker run two trials: each worker has one thread and trial=1
        assert all(w["nthreads"] == 1 for w in workers)
    finally:
        h.close()
    assert h.n_slots() == 0
    h.close()  # idempotent


def test_local_cluster_cpu_default(tmp_path):
    h = start_cluster(ClusterConfig(kind="local", gpus=[], workers=1, dashboard_port=0), tmp_path)
    try:
        assert h.n_slots() == 1
        (w,) = h.client.scheduler_info(n_workers=-1)["workers"].values()
        assert w["resources"] == {"trial": 1}
        assert h.client.submit(_task_env, 0, resources={"trial": 1}).result()[0] == os.environ.get("CUDA_VISIBLE_DEVICES")
    finally:
        h.close()


def test_job_cluster_without_its_submit_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bsub / qsub here
    for kind, cmd in [("lsf", "bsub"), ("pbs", "qsub")]:
        with pytest.raises(MfhpoError, match=f"cluster.kind: {kind} needs `{cmd}`"):
            start_cluster(ClusterConfig(kind=kind, dashboard_port=0), tmp_path)
