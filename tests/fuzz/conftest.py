"""The fuzz test's session: heavy imports done once, sentinels on real work, and the summary at the end.

The summary (cases, exit-0, exit-2, tracebacks, cases over 5 s, per command) is printed after the run and
written as JSON to MOELAB_FUZZ_REPORT (default: fuzz-report.json in pytest's base temporary folder).
"""

import json
import os

import pytest
from fuzz_harness import report, summary_lines

REPORT_DIR = []  # pytest's base temporary folder, once a fuzz test has run


@pytest.fixture(scope="session")
def fuzz_root(tmp_path_factory):
    """A folder for the cases, with torch and every command's module imported (an import is not a case's
    time). The sentinels are put in place around each case only (fuzz_harness.run_case)."""
    import torch  # noqa: F401

    import moelab.bench.calibrate  # noqa: F401
    import moelab.bench.run  # noqa: F401
    import moelab.cli  # noqa: F401
    import moelab.report  # noqa: F401 - matplotlib builds its font cache once, not inside a case
    import moelab.study.run  # noqa: F401
    import moelab.train.compare  # noqa: F401
    import moelab.train.loop  # noqa: F401

    REPORT_DIR.append(tmp_path_factory.getbasetemp())
    return tmp_path_factory.mktemp("fuzz")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    r = report()
    if not r["commands"] or not REPORT_DIR:
        return
    path = os.environ.get("MOELAB_FUZZ_REPORT") or str(REPORT_DIR[0] / "fuzz-report.json")
    with open(path, "w") as f:
        json.dump(r, f, indent=1)
    terminalreporter.section("moelab fuzz")
    for line in summary_lines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"report: {path}")
