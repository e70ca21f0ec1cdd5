"""What every process's Prometheus metrics share: the latency buckets and the labelled-child cache."""
from __future__ import annotations

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class LabelCache:
    """``metric.labels(*values)``, looked up once per metric and combination of values: on a path
    taken per message the lookup cost more than the counting."""

    def __init__(self):
        self._children: dict[tuple, object] = {}

    def __call__(self, metric, *values):
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child
