"""Every training run in one SQLite file: what ran, on what machine, with which spec, its status and summary.

The store is bookkeeping; a run's folder is the truth. A training run whose store is locked (after a bounded
wait) or unreadable warns once and goes on unrecorded; this module never modifies a file it cannot read as a
store (`moelab runs` says so on one line; move the file aside and the next run starts a new store). A row left
"running" by a process that died or could not record its end is listed as "ended, unrecorded" once its run
folder's lock has no live holder.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from moelab.data.cache import home_dir
from moelab.errors import MoelabError
from moelab.train.faults import fault_point
from moelab.train.lock import is_locked

SCHEMA = """CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL, updated REAL NOT NULL, status TEXT NOT NULL,
    out_dir TEXT NOT NULL, model TEXT NOT NULL, spec TEXT NOT NULL, config TEXT NOT NULL,
    machine TEXT NOT NULL, summary TEXT NOT NULL DEFAULT '{}')"""
TIMEOUT_S = 5.0  # how long a write waits for another process's lock on the store before giving up
READ_TIMEOUT_S = 1.0  # how long `moelab runs` waits (a writer holds its lock for milliseconds)
UNRECORDED = "ended, unrecorded"


def store_path() -> Path:
    """$MOELAB_HOME/runs.sqlite, default ~/.cache/moelab/runs.sqlite."""
    home = home_dir()
    home.mkdir(parents=True, exist_ok=True)
    return home / "runs.sqlite"


def _connect() -> sqlite3.Connection:
    con = sqlite3.connect(store_path(), timeout=TIMEOUT_S)
    try:
        con.execute(SCHEMA)
    except BaseException:
        con.close()
        raise
    return con


def _problem(e: BaseException) -> str:
    what = str(e).strip() or type(e).__name__
    return f"{what} (waited {TIMEOUT_S:g} s)" if "locked" in what else what


def _record(write: Callable[[sqlite3.Connection], int | None], warn: Callable[[str], None]) -> int | None:
    """Run one write transaction; on a locked, corrupt or unwritable store warn and return None."""
    try:
        with closing(_connect()) as con, con:
            return write(con)
    except (sqlite3.Error, OSError) as e:
        warn(f"warning: runs store {home_dir() / 'runs.sqlite'} not updated: {_problem(e)}; "
             "the run folder holds the results")
        return None


def machine() -> dict[str, Any]:
    """The host, processor, CPU count, torch version and threads, and the GPU if any."""
    import torch

    return {"host": platform.node(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def start_run(out_dir: Path, model: str, spec: dict, config: dict, warn: Callable[[str], None] = print) -> int | None:
    """Record a run as "running" (call with the run folder's lock held); its id, or None if the store failed."""
    now, where = time.time(), str(out_dir.resolve())

    def write(con: sqlite3.Connection) -> int:
        # an earlier process on this folder that is still "running" was killed (this one holds its lock)
        con.execute("UPDATE runs SET status = 'killed', updated = ? WHERE out_dir = ? AND status = 'running'",
                    (now, where))
        cur = con.execute(
            "INSERT INTO runs (started, updated, status, out_dir, model, spec, config, machine) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (now, now, "running", where, model, json.dumps(spec), json.dumps(config), json.dumps(machine())))
        fault_point("store-start")
        return int(cur.lastrowid)

    return _record(write, warn)


def finish_run(run_id: int | None, status: str, summary: dict, warn: Callable[[str], None] = print) -> None:
    """Record a run's end; a run the store never recorded (run_id None) is skipped."""
    if run_id is None:
        return

    def write(con: sqlite3.Connection) -> None:
        con.execute("UPDATE runs SET status = ?, summary = ?, updated = ? WHERE id = ?",
                    (status, json.dumps(summary), time.time(), run_id))
        fault_point("store-finish")

    _record(write, warn)


def id_ranges(ids: list[int]) -> str:
    """Run ids as ranges: [1, 2, 3, 5] -> "1-3, 5"."""
    spans: list[list[int]] = []
    for i in sorted(set(ids)):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def list_runs(ids: list[int] | None = None) -> list[dict[str, Any]]:
    """Every recorded run, oldest first (or those in `ids`: one that is not recorded is a MoelabError); a store
    that cannot be read is a MoelabError."""
    rows: list = []  # no store file, or no table yet: no run recorded
    try:
        path = store_path()
        if path.exists():
            uri = f"{path.resolve().as_uri()}?mode=ro"
            with closing(sqlite3.connect(uri, uri=True, timeout=READ_TIMEOUT_S)) as con:
                con.row_factory = sqlite3.Row
                if con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchall():
                    rows = con.execute("SELECT * FROM runs ORDER BY id").fetchall()
    except (sqlite3.Error, OSError) as e:
        locked = "locked" in str(e)
        why = f"it is locked by another process (waited {READ_TIMEOUT_S:g} s)" if locked else str(e).strip()
        hint = "; try again" if locked else "; move it aside and the next run starts a new store"
        raise MoelabError(f"runs store {home_dir() / 'runs.sqlite'} cannot be read: {why}{hint}") from None
    missing = sorted(set(ids or ()) - {row["id"] for row in rows})
    if missing:
        known = id_ranges([row["id"] for row in rows])
        raise MoelabError(f"no run {', '.join(map(str, missing))} "
                          f"({f'ids: {known}' if known else 'no run recorded yet'})")
    out = []
    for row in rows:
        if ids and row["id"] not in ids:
            continue
        item = dict(row)
        for key in ("status", "out_dir", "model"):  # SQLite keeps whatever a writer put there
            item[key] = str(item[key])
        for key in ("spec", "config", "machine", "summary"):
            try:
                value = json.loads(item[key])
            except (TypeError, ValueError, RecursionError):
                value = None
            item[key] = value if isinstance(value, dict) else {}
        if item["status"] == "running" and not is_locked(Path(item["out_dir"])):
            item["status"] = UNRECORDED
        out.append(item)
    return out
