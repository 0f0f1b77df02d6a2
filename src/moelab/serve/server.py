"""A serving engine's HTTP server as a child process: started in its own process group on 127.0.0.1, waited
for on /health, always stopped with its whole group (SIGTERM, then SIGKILL after a grace period).

`ServerProcess` is a context manager; leaving it for any reason (an error, Ctrl-C) stops the group, so that no
engine process (vLLM's API server, its engine core and workers) outlives the command. The child's output goes
to a log file whose last lines explain a server that died before it was ready. Torch-free.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from moelab.errors import MoelabError

HOST = "127.0.0.1"
STOP_GRACE_S = 10.0
_IN_USE = ("address already in use", "errno 98")
# vLLM's closing lines that point elsewhere ("See root cause above"): the line above them says why
_GENERIC = ("root cause above", "engine core initialization failed", "failed core proc")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def check_port_free(port: int) -> None:
    """Refuse, in one line, a port on 127.0.0.1 that is out of range or already taken."""
    if not 1 <= port <= 65535:
        raise MoelabError(f"--port must be in 1..65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise MoelabError(f"port {port} on {HOST} is in use; give another --port or leave it out for a "
                                  "free one") from None
            raise MoelabError(f"cannot listen on {HOST}:{port} ({e.strerror})") from None


def log_tail(path: Path, lines: int = 40) -> list[str]:
    """The last non-empty lines of a log file (empty when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]


def reason(lines: list[str]) -> str:
    """The line of a dead server's log that says why: the last exception or error line, else the last line."""
    for line in reversed(lines):
        low = line.lower()
        if ("error" in low or "exception" in low) and not low.startswith("traceback") and not any(
                generic in low for generic in _GENERIC):
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else "no output"


class ServerExited(MoelabError):
    """The server process ended before it answered /health."""

    def __init__(self, message: str, port_in_use: bool) -> None:
        super().__init__(message)
        self.port_in_use = port_in_use


class ServerProcess:
    """`command` (a list; `{port}` in an argument is replaced) run in its own session and process group.

    `with ServerProcess(...) as server:` starts it and waits until GET http://127.0.0.1:PORT/health answers 200
    (or raises: ServerExited with the log's reason, MoelabError after `start_timeout_s`); on leaving, stop()."""

    def __init__(self, command: list[str], port: int, log_path: Path, env: dict[str, str] | None = None,
                 start_timeout_s: float = 300.0, name: str = "server",
                 on_wait: Callable[[float], None] | None = None) -> None:
        self.command = [a.replace("{port}", str(port)) for a in command]
        self.port, self.log_path, self.env = port, Path(log_path), env
        self.start_timeout_s, self.name, self.on_wait = start_timeout_s, name, on_wait
        self.proc: subprocess.Popen | None = None
        self.ready_after_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, env=self.env,
                                             start_new_session=True, preexec_fn=_die_with_parent)
            except OSError as e:
                raise MoelabError(f"cannot start {self.name} ({self.command[0]}: {e.strerror})") from None
        self._started = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, poll_s: float = 0.5) -> float:
        """Seconds until /health answered 200; raises if the process exits or start_timeout_s passes."""
        deadline = self._started + self.start_timeout_s
        while True:
            if not self.alive():
                lines = log_tail(self.log_path)
                in_use = any(m in line.lower() for line in lines for m in _IN_USE)
                raise ServerExited(f"{self.name} exited (code {self.proc.returncode}) before it was ready: "
                                   f"{reason(lines)} (log: {self.log_path})", in_use)
            if _healthy(f"{self.base_url}/health"):
                self.ready_after_s = time.monotonic() - self._started
                return self.ready_after_s
            now = time.monotonic()
            if now > deadline:
                raise MoelabError(f"{self.name} did not answer {self.base_url}/health within "
                                  f"{self.start_timeout_s:.0f} s (log: {self.log_path})")
            if self.on_wait:
                self.on_wait(now - self._started)
            time.sleep(poll_s)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM to the whole process group, SIGKILL to what is left after `grace_s`; waits for the child."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the child leads its own group
        try:
            _signal_group(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace_s)
            deadline = time.monotonic() + grace_s
            while _group_alive(pgid) and time.monotonic() < deadline:  # workers may outlive the leader briefly
                time.sleep(0.1)
        finally:  # a second Ctrl-C during the grace period must not leave the group running
            _signal_group(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)


def _prctl():
    """libc's prctl, looked up in the parent (a child between fork and exec must not dlopen)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (Linux PR_SET_PDEATHSIG = 1), so
    that a SIGKILLed moelab does not leave the server running in its own session."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)


def _healthy(url: str, timeout_s: float = 2.0) -> bool:
    """GET url answers 200 (no proxy: the server is on 127.0.0.1)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as resp:
            return resp.status == 200
    except (OSError, ValueError):  # URLError, HTTPError, refused, reset, timed out
        return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
