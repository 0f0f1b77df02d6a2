"""The report tests share one realistic study (see study_fixture.py) and one rendered report folder; the study
with a vLLM serving block (a copy: the shared study stays an older study.json without one) has its own."""

import pytest
from study_fixture import study as build_study
from study_fixture import synthetic_serving

from moelab.report import write_report


@pytest.fixture(scope="session")
def study():
    return build_study()


@pytest.fixture(scope="session")
def report_dir(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    write_report(study, out)
    return out


@pytest.fixture(scope="session")
def served_study(study):
    return {**study, "serving": synthetic_serving()}


@pytest.fixture(scope="session")
def served_report_dir(served_study, tmp_path_factory):
    out = tmp_path_factory.mktemp("report-served")
    write_report(served_study, out)
    return out
