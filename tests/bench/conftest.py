"""Shared fixtures: one quick calibration per session, and a fixed hardware file for fast bench runs."""

import json

import pytest
from bench_hardware import FIXED_HW


@pytest.fixture(scope="session")
def calibrated(tmp_path_factory):
    from moelab.bench.calibrate import calibrate

    return calibrate(quick=True)


@pytest.fixture()
def hw_file(tmp_path):
    path = tmp_path / "hw.json"
    path.write_text(json.dumps(FIXED_HW))
    return str(path)
