"""Every training run in one SQLite file: what ran, on what machine, with which spec, its status and summary."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import time
from pathlib import Path
from typing import Any

from moelab.data.cache import home_dir

SCHEMA = """CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL, updated REAL NOT NULL, status TEXT NOT NULL,
    out_dir TEXT NOT NULL, model TEXT NOT NULL, spec TEXT NOT NULL, config TEXT NOT NULL,
    machine TEXT NOT NULL, summary TEXT NOT NULL DEFAULT '{}')"""


def store_path() -> Path:
    """$MOELAB_HOME/runs.sqlite, default ~/.cache/moelab/runs.sqlite."""
    home = home_dir()
    home.mkdir(parents=True, exist_ok=True)
    return home / "runs.sqlite"


def _connect() -> sqlite3.Connection:
    con = sqlite3.connect(store_path(), timeout=30)
    con.execute(SCHEMA)
    return con


def machine() -> dict[str, Any]:
    import torch

    return {"host": platform.node(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def start_run(out_dir: Path, model: str, spec: dict, config: dict) -> int:
    now = time.time()
    with _connect() as con:
        # an earlier process on this folder that is still "running" was killed (this one resumes it)
        con.execute("UPDATE runs SET status = 'killed', updated = ? WHERE out_dir = ? AND status = 'running'",
                    (now, str(out_dir.resolve())))
        cur = con.execute(
            "INSERT INTO runs (started, updated, status, out_dir, model, spec, config, machine) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (now, now, "running", str(out_dir.resolve()), model, json.dumps(spec), json.dumps(config),
             json.dumps(machine())))
        return int(cur.lastrowid)


def finish_run(run_id: int, status: str, summary: dict) -> None:
    with _connect() as con:
        con.execute("UPDATE runs SET status = ?, summary = ?, updated = ? WHERE id = ?",
                    (status, json.dumps(summary), time.time(), run_id))


def list_runs(ids: list[int] | None = None) -> list[dict[str, Any]]:
    with _connect() as con:
        con.row_factory = sqlite3.Row
        rows = con.execute("SELECT * FROM runs ORDER BY id").fetchall()
    out = []
    for row in rows:
        if ids and row["id"] not in ids:
            continue
        item = dict(row)
        for key in ("spec", "config", "machine", "summary"):
            item[key] = json.loads(item[key])
        out.append(item)
    return out
