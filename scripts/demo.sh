#!/usr/bin/env bash
# Set up, then run the demo: three partners, DP-SGD churn model, per-round AUC and ε.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
exec .venv/bin/fedcrm demo "$@"
