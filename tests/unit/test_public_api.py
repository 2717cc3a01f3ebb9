"""The top-level names of DESIGN.md exist, and importing the package loads no driver."""

from __future__ import annotations

import subprocess
import sys

import instrumented_clients

DESIGN_NAMES = (
    "RetryPolicy", "RetryBudget", "CircuitBreaker", "BreakerState", "CircuitOpenError",
    "ConnectionState", "Telemetry", "retry", "ResilientPublisher", "ResilientConsumer",
    "ResilientRedis", "ResilientDatabase", "HealthRegistry", "serve_metrics_and_health",
    "RetryConfig", "retry_async", "is_transient_rmq_error", "is_transient_http_error",
    "DatabaseConnectionRetry", "RedisConnectionRetry", "with_db_retry", "with_redis_retry",
    "ResilientConnection",
)


def test_every_exported_name_resolves() -> None:
    for name in instrumented_clients.__all__:
        assert getattr(instrumented_clients, name) is not None, name


def test_design_names_are_exported() -> None:
    missing = [name for name in DESIGN_NAMES if name not in instrumented_clients.__all__]
    assert missing == []


def test_importing_the_package_loads_no_driver() -> None:
    code = (
        "import sys, instrumented_clients; "
        "print(sorted(m for m in ('pika', 'redis', 'sqlalchemy', 'psycopg', 'pymysql') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
