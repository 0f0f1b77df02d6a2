"""The decision: a workload file, and dense vs MoE for it with the seeds' factor table and its flips."""

from moelab.decide.recommend import recommend
from moelab.decide.workload import Workload, default_workload, load_workload

__all__ = ["Workload", "default_workload", "load_workload", "recommend"]
