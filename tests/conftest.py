"""Shared test plugins: engine fixtures (vllm_demo_engine, transformers_demo_engine,
engine_models) live in tests/engines/fixtures.py."""

pytest_plugins = ["tests.engines.fixtures"]
