"""`moelab study`: the seeds' method as one command (train both kinds, measure, model the frontier, decide)."""

from moelab.study.plan import StudyPlan
from moelab.study.run import run_study

__all__ = ["StudyPlan", "run_study"]
