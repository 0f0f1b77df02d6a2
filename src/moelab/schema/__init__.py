"""Validation of the files a user gives: pydantic models, one error line per file, JSON Schemas for editors.

- `moelab.validation` (beside this package): `format_errors` and `validation_error`, every problem of a file
  on one capped line (imports no pydantic, so it costs nothing to import).
- `moelab.schema.base`: the strict base model (unknown keys refused, finite numbers, no coercion).
- `moelab.schema.hardware`, `moelab.schema.workload`, `moelab.schema.manifest`: the models of the hardware,
  workload and `moelab fit` manifest files.

This package imports nothing heavy itself: pydantic is loaded only when a user's file is validated or a
schema is printed, never for a bundled preset.
"""

from __future__ import annotations

from typing import Any

from moelab.errors import MoelabError

SCHEMAS = ("hardware", "workload", "manifest")


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12, from pydantic) of the file kind `name`: one of SCHEMAS."""
    if name == "hardware":
        from moelab.schema.hardware import HardwareFile as model
    elif name == "workload":
        from moelab.schema.workload import WorkloadFile as model
    elif name == "manifest":
        from moelab.schema.manifest import Manifest as model
    else:
        raise MoelabError(f"unknown schema {name!r} (schemas: {', '.join(SCHEMAS)})")
    from moelab.schema.base import schema_of

    return schema_of(model)
