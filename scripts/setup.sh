#!/usr/bin/env bash
# Create .venv with the CPU build of torch and fedcrm (editable, with test extras).
# Re-running is cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.fedcrm-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
# Byte-compile our own sources (an editable install leaves them as .py): where
# PYTHONDONTWRITEBYTECODE is set, as on this machine, every process (each CLI call, Ray
# actor and ClientApp) would otherwise compile the modules it imports again; all 111 take
# 0.6 s. Only changed files are compiled again.
compiled() { .venv/bin/python -m compileall -q src clients server > /dev/null; }
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  compiled
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "setting up .venv (first time: a few minutes)…" >&2
# this machine's pip config names local package folders that may not exist: hide that noise
quiet() { "$@" 2> >(grep -v "^WARNING: Location 'file://" >&2); }
# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build
quiet .venv/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
quiet .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
echo "$want" > "$stamp"
compiled
