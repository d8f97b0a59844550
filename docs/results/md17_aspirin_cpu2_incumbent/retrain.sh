#!/usr/bin/env bash
# Replays the incumbent's training chain (same config, seeds, budgets, warm starts) and checks that
# the validation metrics match the study's to float tolerance on the same device.
#   bash retrain.sh [OUT_DIR] [--data PATH] [--device cpu|cuda]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-retrain_out}"; shift || true
exec python -m mfhpo.study.incumbent retrain "$HERE" --out "$OUT" "$@"
