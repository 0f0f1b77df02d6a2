#!/usr/bin/env bash
# Create .venv with moelab and its dev tools. Installs the CPU build of torch only where the
# environment has no torch at all; a torch that is already there is never replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
pip_install() { "$VPY" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | grep -v 'is ignored' || true; }
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  # The local wheel cache carries the CPU build; elsewhere point PIP_EXTRA_INDEX_URL at PyTorch's CPU index.
  pip_install "torch==2.13.0+cpu"
fi
pip_install -e ".[torch,dev]"
"$VPY" -c "import moelab, torch; print('moelab ready; torch', torch.__version__)"
# vLLM for the serving benchmarks, in its own environment (.venv-serve); never touches .venv
bash scripts/setup-serve.sh
