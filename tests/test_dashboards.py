"""Browser views of a study: the Dask dashboard served during a run (bokeh installed, the link to
the port actually bound, printed once), the Optuna mirror read back with Optuna's own API, and
``mfhpo dashboard`` serving optuna-dashboard on 127.0.0.1. Real LocalCluster, real SMAC, toy
objective."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from mfhpo.study.rundir import RunDir
from mfhpo.study.runner import run_command

from test_study_dispatch import make_study


def _get(url: str, timeout: float = 20) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode("utf-8", "replace")


def test_dask_dashboard_is_served_during_a_run_on_the_port_bound(tmp_path):
    pytest.importorskip("bokeh")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    taken = busy.getsockname()[1]  # the study asks for a port that is taken
    study = make_study(tmp_path, budget={"trials": 6}, toy={"sleep_fixed_s": 1.5},
                       cluster={"kind": "local", "workers": 2, "dashboard_port": taken,
                                "login_host": "login.example.org"})  # as on a cluster: the tunnel line too
    proc = subprocess.Popen([sys.executable, "-m", "mfhpo.cli", "run", str(study), "--rundir", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines: list[str] = []
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    page = None
    try:
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"Dask dashboard: (\S+)", line)
            if m and page is None:
                page = _get(m.group(1))  # while the study runs
                url = m.group(1)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        busy.close()
    out = "".join(lines)
    assert proc.returncode == 0, out + "".join(err)
    assert page is not None, out
    assert "bokeh" in page.lower() and "needs bokeh" not in page.lower()
    assert f":{taken}/" not in url and f"(port {taken} was busy)" in out
    assert out.count(url) == 1 and out.count("Dask dashboard") == 1, out  # one link, nowhere else
    assert f"live view: mfhpo dashboard {tmp_path / 'run'}" in out
    port = int(re.search(r":(\d+)/status", url).group(1))
    assert re.search(rf"from your laptop: ssh -N -L {port}:\S+:{port} \S+@login\.example\.org  "
                     rf"then open http://localhost:{port}/status", out), out
    assert "UserWarning" not in "".join(err) and "already in use" not in "".join(err)
    assert "trial 6" in out  # the study ran to its end after the page was served (a page fetched after
    # the run would have found the scheduler gone)


def test_optuna_mirror_reads_back_with_optuna(tmp_path):
    optuna = pytest.importorskip("optuna")
    from optuna.distributions import CategoricalDistribution, IntDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    study = make_study(tmp_path, budget={"trials": 10}, toy={"sleep_fixed_s": 0.2, "fail_trials": [3]})
    rundir = tmp_path / "run"
    run_command(study, rundir=rundir, progress=False)
    recs = {r["trial_id"]: r for r in (x.to_json() for x in RunDir(rundir).trial_records())}
    journal = rundir / "optuna" / "journal.log"
    storage = JournalStorage(JournalFileBackend(str(journal)))
    s = optuna.load_study(study_name="toy", storage=storage)
    trials = s.get_trials()
    assert len(trials) == len(recs) == 10
    for t in trials:
        r = recs[t.user_attrs["mfhpo_trial_id"]]
        assert t.user_attrs["budget"] == r["budget"] and t.user_attrs["epochs"] == r["epochs"]
        if r["status"] == "SUCCESS":
            assert t.state == TrialState.COMPLETE and t.value == pytest.approx(r["cost"])
            assert t.user_attrs["val_baseline_force_mae"] == pytest.approx(r["metrics"]["val"]["baseline_force_mae"])
        else:
            assert t.state == TrialState.FAIL and t.value is None
        assert t.params == {k: v for k, v in r["searched"].items()}
        assert t.datetime_start is not None and t.datetime_complete >= t.datetime_start
    assert recs[3]["status"] == "CRASHED"
    d = trials[0].distributions
    assert isinstance(d["nodes_1"], IntDistribution) and d["nodes_1"].log and (d["nodes_1"].low, d["nodes_1"].high) == (8, 256)
    assert isinstance(d["groups_2"], CategoricalDistribution) if "groups_2" in d else True
    assert s.best_value == pytest.approx(min(r["cost"] for r in recs.values() if r["status"] == "SUCCESS"))

    # SMAC's run history carries real start/end times and the per-trial information (DeepCAVE reads both)
    rh = json.loads(next((rundir / "smac").rglob("runhistory.json")).read_text())["data"]
    rh = [e for e in rh if e["status"] != 0]  # not the asked-ahead trial the budget left unsubmitted
    assert len(rh) == 10
    for e in rh:
        assert e["endtime"] > e["starttime"] > 1.7e9
        assert e["additional_info"]["trial_id"] in recs

    # mfhpo dashboard: rebuilds a missing mirror from the run directory, serves optuna-dashboard
    pytest.importorskip("optuna_dashboard")
    journal.unlink()
    proc = subprocess.Popen([sys.executable, "-m", "mfhpo.cli", "dashboard", str(rundir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        for line in proc.stdout:
            m = re.search(r"optuna-dashboard: (http://127\.0\.0\.1:\d+)/dashboard/", line)
            if m:
                url = m.group(1)
                break
        assert url, "no URL printed"
        for _ in range(50):
            try:
                api = json.loads(_get(url + "/api/studies"))
                break
            except OSError:
                time.sleep(0.2)
        names = [x["study_name"] for x in api["study_summaries"]]
        assert names == ["toy"]
        sid = api["study_summaries"][0]["study_id"]
        detail = json.loads(_get(f"{url}/api/studies/{sid}"))
        assert len(detail["trials"]) == 10
        assert "<html" in _get(url + "/dashboard/").lower()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_mirror_is_off_with_one_line_without_optuna(tmp_path, monkeypatch):
    from mfhpo.study import optuna_mirror
    from mfhpo.study.config import MetricSection

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    monkeypatch.setattr(optuna_mirror, "_told_missing", False)
    lines: list[str] = []
    for stage in ("descriptor", "model"):
        m = optuna_mirror.open_mirror(tmp_path, "s", stage, None, MetricSection(), note=lines.append)
        m.started({"trial_id": 1})
        m.finished({"trial_id": 1, "status": "SUCCESS", "cost": 1.0})
    assert len(lines) == 1 and "optuna not installed" in lines[0] and "mfhpo[dashboard]" in lines[0]
    assert not (tmp_path / "optuna").exists()


def test_dashboard_command_errors_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mfhpo.cli", "dashboard", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no such run directory" in r.stderr
