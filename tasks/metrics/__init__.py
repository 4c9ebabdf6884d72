"""Judging a rollout from live metrics: checks (`checks`), the providers that answer queries (`providers`, with
Prometheus in `prometheus`), and the Prefect tasks flows call (`tasks`). The built-in checks' queries come from
the observer of the data plane carrying the traffic (`tasks.observers`); judging a value is `rollbook.judging`.
"""
