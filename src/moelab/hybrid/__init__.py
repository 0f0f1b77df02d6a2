"""Hybrid serving of a dense and a MoE model: route each query to one by a feature of its prompt, or cascade from
the dense model to the MoE when the dense answer's confidence is low; measured per query on the probe sets and
composed into a cost-quality curve (moelab.hybrid.run). One job per module: inputs (checks), features and router
(the classifier), moelab_engine and vllm_engine (who answers), cost (FLOPs per answer), table (per-query
measurements), policies (composition), curve (sweep, Pareto flags, best points)."""
