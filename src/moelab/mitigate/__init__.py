"""The MoE mitigations, for real on moelab's models: upcycling a dense run, pruning experts by usage, quantizing
them, offloading them to a slower tier. Each transform pairs a spec change with a weight change and writes a run
folder (moelab.mitigate.runs) that bench, serve-bench, export and train --init-from take."""
