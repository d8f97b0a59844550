"""The README's Python API example runs as written, and the API agrees with the run directory."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_api_example_runs_as_written(tmp_path):
    (tmp_path / "spaces").mkdir()
    shutil.copy(ROOT / "spaces" / "demo.yaml", tmp_path / "spaces" / "demo.yaml")
    code = readme_example()
    assert "mfhpo.Study.from_yaml" in code
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    called = [ln for ln in lines if ln.startswith("trial ")]
    assert len(called) == 14  # the callback saw every finished trial
    m = re.search(r"^14 trials; best: trial (\d+) at budget (\S+), cost (\S+)$", out.stdout, re.M)
    assert m, out.stdout[-2000:]
    bundle = Path(lines[-1])
    if not bundle.is_absolute():
        bundle = tmp_path / bundle
    assert bundle.name == "bundle.zip" and bundle.stat().st_size > 0

    import mfhpo
    from mfhpo.study.trial import TrialStatus

    study = mfhpo.Study.from_yaml(tmp_path / "spaces" / "demo.yaml", rundir=tmp_path / "runs" / "demo-api")
    assert [t.trial_id for t in study.trials] == list(range(1, 15))
    best = study.best_trial
    assert best.trial_id == int(m.group(1)) and best.status == TrialStatus.SUCCESS
    ok = [t for t in study.trials if t.status == TrialStatus.SUCCESS]
    top = max(t.budget for t in ok)
    assert best.budget == top and best.cost == min(t.cost for t in ok if t.budget == top)
