"""The top-level API, the compatibility names and their deprecated spellings; importing the
package loads no driver."""

from __future__ import annotations

import subprocess
import sys

import pytest

import instrumented_clients
import instrumented_clients.compat

API_NAMES = (
    "RetryPolicy", "RetryBudget", "CircuitBreaker", "BreakerState", "CircuitOpenError",
    "ConnectionState", "Telemetry", "retry", "ResilientPublisher", "ResilientConsumer",
    "ResilientRedis", "ResilientDatabase", "HealthRegistry", "serve_metrics_and_health",
    "ConfigError", "is_transient", "is_transient_rmq_error", "is_transient_db_error",
    "ResilientClient", "HealthReport", "AsyncResilientRedis", "AsyncResilientDatabase",
    "AsyncResilientPublisher", "AsyncResilientConsumer",
)
COMPAT_NAMES = (
    "RetryConfig", "retry_async", "is_transient_http_error", "DatabaseConnectionRetry",
    "RedisConnectionRetry", "with_db_retry", "with_redis_retry", "get_db_connection_retry",
    "get_redis_connection_retry", "ResilientConnection",
)


def test_every_exported_name_resolves() -> None:
    for module in (instrumented_clients, instrumented_clients.compat):
        for name in module.__all__:
            assert getattr(module, name) is not None, name


def test_the_top_level_lists_the_api_and_no_compatibility_name() -> None:
    exported = set(instrumented_clients.__all__)
    assert [name for name in API_NAMES if name not in exported] == []
    assert exported.isdisjoint(COMPAT_NAMES)
    assert "compat" not in exported


def test_compat_lists_every_compatibility_name() -> None:
    missing = [name for name in COMPAT_NAMES if name not in instrumented_clients.compat.__all__]
    assert missing == []


@pytest.mark.parametrize("name", COMPAT_NAMES)
def test_the_old_top_level_spelling_warns_and_is_the_same_object(name: str) -> None:
    with pytest.warns(DeprecationWarning, match=rf"instrumented_clients\.{name} .*compat"):
        value = getattr(instrumented_clients, name)
    assert value is getattr(instrumented_clients.compat, name)


def test_from_import_of_an_old_name_warns() -> None:
    with pytest.warns(DeprecationWarning, match="RetryConfig"):
        from instrumented_clients import RetryConfig  # noqa: F401


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        instrumented_clients.Nope  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        instrumented_clients.compat.Nope  # noqa: B018


def test_importing_the_package_or_compat_loads_no_driver() -> None:
    code = (
        "import sys, instrumented_clients, instrumented_clients.compat; "
        "print(sorted(m for m in ('pika', 'redis', 'sqlalchemy', 'psycopg', 'pymysql') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
