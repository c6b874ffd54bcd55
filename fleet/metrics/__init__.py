"""Prometheus export for workers (prefork-correct) and for the API.

A worker's metrics are one :class:`fleet.metrics.worker.WorkerMetrics`, made once
its metrics directory is set and wired in by :mod:`fleet.metrics.setup`. Nothing
here imports ``prometheus_client`` at package import.
"""
