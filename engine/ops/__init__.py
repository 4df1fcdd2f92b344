"""Operate: the daemon, the API and its models, metrics, logs, retention, readiness."""
