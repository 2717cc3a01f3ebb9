"""A pytest plugin for redis-py's own test suite: ``-p resilient_redis_plugin``.

With ``--instrumented-client=ResilientRedis``, upstream's client factory (``_get_client`` in
its ``tests/conftest.py``, behind the ``r``, ``r2``, ``decoded_r``, ... fixtures) builds
``ResilientRedis`` wherever it would build ``redis.Redis``, from the same connection pool.
With ``redis.Redis`` nothing is substituted. Either way ``--instrumented-report=PATH`` receives
each test's outcome and the classes of the clients the factory built, so a run that silently
tested the wrong class shows.
"""

from __future__ import annotations

import collections
import functools
import json
import time
import types
from pathlib import Path
from typing import Any

import pytest
import redis

_UPSTREAM_CONFTEST = "tests.conftest"
_UPSTREAM_ASYNC_CONFTEST = "tests.test_asyncio.conftest"


class _Recorder:
    def __init__(self, client: str, report: Path | None) -> None:
        self.client = client
        self.report = report
        self.outcomes: dict[str, str] = {}
        self.clients_built: collections.Counter[str] = collections.Counter()
        self.started = time.monotonic()

    def wrap_factory(self, conftest: Any) -> None:
        original = conftest._get_client
        substitute: type[redis.Redis] | None = None
        if self.client == "ResilientRedis":
            from instrumented_clients.redis import ResilientRedis

            substitute = ResilientRedis

        @functools.wraps(original)
        def get_client(cls: type[Any], request: Any, *args: Any, **kwargs: Any) -> Any:
            if substitute is not None and cls is redis.Redis:
                cls = substitute
            client = original(cls, request, *args, **kwargs)
            self.clients_built[type(client).__name__] += 1
            return client

        conftest._get_client = get_client

    def wrap_async_factory(self, conftest: Any) -> None:
        """Upstream's asyncio factory (``create_redis``) builds ``cls=redis.Redis`` with its
        module ``redis`` being ``redis.asyncio``: that name is pointed at a copy of the module
        whose ``Redis`` is AsyncResilientRedis. Every client built is recorded by class."""
        import redis.asyncio

        original_init = redis.asyncio.Redis.__init__

        @functools.wraps(original_init)
        def recording_init(client: Any, *args: Any, **kwargs: Any) -> None:
            original_init(client, *args, **kwargs)
            self.clients_built[type(client).__name__] += 1

        redis.asyncio.Redis.__init__ = recording_init  # type: ignore[method-assign]
        if self.client == "AsyncResilientRedis":
            from instrumented_clients.redis import AsyncResilientRedis

            substitute = types.ModuleType(redis.asyncio.__name__)
            substitute.__dict__.update(vars(redis.asyncio))
            substitute.Redis = AsyncResilientRedis  # type: ignore[attr-defined]
            conftest.redis = substitute

    @pytest.hookimpl
    def pytest_plugin_registered(self, plugin: Any) -> None:
        # Upstream's test modules import _get_client by name after its conftest is registered.
        name = getattr(plugin, "__name__", None)
        if name == _UPSTREAM_CONFTEST:
            self.wrap_factory(plugin)
        elif name == _UPSTREAM_ASYNC_CONFTEST:
            self.wrap_async_factory(plugin)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # A test passes when its call passed and neither its setup nor its teardown failed.
        if report.failed:
            self.outcomes[report.nodeid] = "failed"
        elif report.skipped and report.when in ("setup", "call"):
            self.outcomes[report.nodeid] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        elif report.when == "call" and report.passed:
            self.outcomes[report.nodeid] = "xpassed" if hasattr(report, "wasxfail") else "passed"

    @pytest.hookimpl
    def pytest_sessionfinish(self) -> None:
        if self.report is None:
            return
        self.report.write_text(json.dumps({
            "client": self.client,
            "outcomes": self.outcomes,
            "clients_built": dict(self.clients_built),
            "seconds": time.monotonic() - self.started,
        }))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("instrumented-clients")
    group.addoption("--instrumented-client",
                    choices=("redis.Redis", "ResilientRedis", "redis.asyncio.Redis",
                             "AsyncResilientRedis"),
                    default="redis.Redis", help="the class upstream's fixtures build")
    group.addoption("--instrumented-report", type=Path, default=None,
                    help="write the outcomes of the run to this JSON file")


def pytest_configure(config: pytest.Config) -> None:
    recorder = _Recorder(config.getoption("--instrumented-client"),
                         config.getoption("--instrumented-report"))
    config.pluginmanager.register(recorder, "instrumented-clients-recorder")
