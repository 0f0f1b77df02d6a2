"""What models *cost*: pure functions of specs and a workload. No torch import."""
