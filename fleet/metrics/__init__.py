"""Prometheus export for workers (prefork-correct) and for the API.

Nothing here imports ``prometheus_client`` at package import: it picks its
single- or multi-process mode when first imported, so a worker's launcher must
set the metrics directory first (see :mod:`fleet.metrics.setup`).
"""
