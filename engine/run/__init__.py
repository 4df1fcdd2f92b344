"""Run: the worker, runs and steps, the action contract and registry, outbound delivery."""
