#!/usr/bin/env bash
# The GPU check: GMP speed on the GPU vs one CPU core, training throughput on cached features
# (energy-only and with forces), a 2-trial study on the GPU worker. At most 8 minutes.
#
#   bash benchmarks/gpu_check.sh                  # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --cpu --quick    # the CPU path with tiny sizes (tests/test_gpu_check.py)
#
# Data: ../shared/data/oc20/oc20_train_569.traj when present (MFHPO_SHARED overrides ../shared),
# generated EMT slabs otherwise. Details: benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --signal=TERM --kill-after=10 480 python benchmarks/gpu_check.py "$@"
