"""Serving benchmarks: export for vLLM, server processes, load generation against OpenAI-compatible endpoints."""
