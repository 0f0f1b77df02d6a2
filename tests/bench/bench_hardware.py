"""A fixed CPU-like hardware file for fast, deterministic predictions in the bench tests."""

FIXED_HW = {
    "name": "test-cpu", "peak_tflops": {"fp32": 0.05, "bf16": 0.1}, "memory_gb": 16, "memory_bandwidth_gbps": 10,
    "compute_efficiency": 1.0, "bandwidth_efficiency": 1.0, "tdp_watts": 16, "usd_per_hour": 0.04,
    "step_overhead_us": 50, "layer_overhead_us": 100, "moe_layer_overhead_us": 150, "expert_overhead_us": 20,
    "cache_gb": 0.032, "cache_bandwidth_gbps": 40, "gemv_bandwidth_gbps": 30, "elementwise_bandwidth_gbps": 15,
    "attention_tflops": 0.04, "attention_bandwidth_gbps": 20, "attention_head_overhead_us": 0.3,
}
