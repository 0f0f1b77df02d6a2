"""The report tests share one realistic study (see study_fixture.py) and one rendered report folder."""

import pytest
from study_fixture import study as build_study

from moelab.report import write_report


@pytest.fixture(scope="session")
def study():
    return build_study()


@pytest.fixture(scope="session")
def report_dir(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    write_report(study, out)
    return out
