"""Generators of the dashboards, alert rules and runbooks, and the dashboard snapshot renderer.

Needs the ``dashboards`` extra (grafanalib, PyYAML, matplotlib).
"""

from instrumented_clients.observability.config import (
    DEFAULT_CONFIG,
    ObservabilityConfig,
    SystemThresholds,
)
from instrumented_clients.observability.generate import generate

__all__ = ["DEFAULT_CONFIG", "ObservabilityConfig", "SystemThresholds", "generate"]
