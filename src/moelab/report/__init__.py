"""The study report: a self-contained HTML page with plots, summary.json and a CSV per table."""

from moelab.report.html import write_report

__all__ = ["write_report"]
