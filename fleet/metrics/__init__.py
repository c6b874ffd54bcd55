"""Prometheus metrics for the fleet."""
