"""Health checks and the ``/metrics``, ``/health``, ``/ready`` endpoints."""

from instrumented_clients.health.http import (
    MetricsServer,
    make_asgi_app,
    make_wsgi_app,
    serve_metrics_and_health,
)
from instrumented_clients.health.multiprocess import (
    clear_multiprocess_dir,
    mark_process_dead,
    metrics_registry,
    multiprocess_dir,
)
from instrumented_clients.health.registry import (
    HealthRegistry,
    HealthStatus,
    SupportsHealth,
    get_default_health_registry,
    is_dependency_up,
    sanitize,
)

__all__ = [
    "HealthRegistry",
    "HealthStatus",
    "MetricsServer",
    "SupportsHealth",
    "clear_multiprocess_dir",
    "get_default_health_registry",
    "is_dependency_up",
    "make_asgi_app",
    "make_wsgi_app",
    "mark_process_dead",
    "metrics_registry",
    "multiprocess_dir",
    "sanitize",
    "serve_metrics_and_health",
]
