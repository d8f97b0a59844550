#!/usr/bin/env bash
# The project's one test command (README, .ci/run): install, start a local Slurm if we can, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install -q torch==2.13.0 2>&1 | grep -v "Running pip as the 'root'" || true
python3 -m pip install -q -e ".[test]" 2>&1 | grep -v "Running pip as the 'root'" || true
# A real single-node Slurm for the cluster tests (root + apt only; the tests skip otherwise).
if [ -x scripts/start_slurm.sh ]; then
  bash scripts/start_slurm.sh || echo "slurm: could not be started; its tests will skip"
fi
set +e
python3 -m pytest -q -ra "$@"
rc=$?
[ "$rc" -eq 5 ] && { echo "pytest collected no tests"; exit 1; }
exit $rc
