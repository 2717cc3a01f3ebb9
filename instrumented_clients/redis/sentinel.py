"""Redis behind Sentinel: a pool that asks the Sentinels for the primary, and says which it is.

A ``redis+sentinel://host:port[,host:port...]/service[/db]`` URL (or
:meth:`ResilientRedis.from_sentinel`) gives the client redis-py's ``SentinelConnectionPool``:
each new connection asks the Sentinels for the service's primary. After a failover the old
primary, now a replica, refuses writes with ``READONLY``; redis-py's
``SentinelManagedConnection`` then drops the connection and raises ``ConnectionError("The previous
master is now a slave")``. :func:`~.errors.is_demoted_primary` recognises both shapes as "refused,
not applied", so the write rule retries such a write against the new primary, and only such a
write (see :mod:`instrumented_clients.redis.client`).

The pool logs each change of primary (the first one found at INFO, a failover at WARNING) and
health reports the service and its current primary.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from redis.asyncio import sentinel as async_sentinel
from redis.asyncio.connection import ConnectionPool as AsyncConnectionPool
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelConnectionPoolProxy

from instrumented_clients.redis.settings import SENTINEL_SCHEME, parse_sentinel_url

__all__ = [
    "AsyncLoggingSentinelPool",
    "LoggingSentinelPool",
    "describe_primary",
    "is_sentinel_url",
    "sentinel_pool",
]

_log = logging.getLogger("instrumented_clients.redis")
# Asking the Sentinels is a fast local question: one that does not answer within a second is
# skipped for the next (redis-py tries each in turn), and never retried by redis-py itself.
_SENTINEL_DEFAULTS: Final[dict[str, Any]] = {"socket_timeout": 1.0,
                                             "socket_connect_timeout": 1.0}


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + ":")


def _announce(service: str, before: Any, after: Any) -> None:
    if after is None or after == before:
        return
    address = f"{after[0]}:{after[1]}"
    if before is None:
        _log.info("redis service %r: primary is %s", service, address)
    else:
        _log.warning("redis service %r: primary changed from %s:%s to %s (failover)",
                     service, before[0], before[1], address)


class _LoggingPoolProxy(SentinelConnectionPoolProxy):
    """What redis-py's sync connections ask for the primary (the pool's ``proxy``), logging."""

    def get_master_address(self) -> Any:
        before = self.master_address
        address = super().get_master_address()  # type: ignore[no-untyped-call]
        _announce(self.service_name, before, address)
        return address


class LoggingSentinelPool(SentinelConnectionPool):
    """redis-py's ``SentinelConnectionPool`` that logs each change of primary."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        # Sync connections reach the Sentinels through the pool's proxy, not the pool.
        self.proxy = _LoggingPoolProxy(
            connection_pool=self, is_master=self.is_master,
            check_connection=self.check_connection, service_name=service_name,
            sentinel_manager=sentinel_manager)  # type: ignore[no-untyped-call]
        self.connection_kwargs["connection_pool"] = self.proxy


class AsyncLoggingSentinelPool(async_sentinel.SentinelConnectionPool):
    """The same for ``redis.asyncio``."""

    async def get_master_address(self) -> Any:
        before = self.master_address
        address = await super().get_master_address()  # type: ignore[no-untyped-call]
        _announce(self.service_name, before, address)
        return address


def sentinel_pool(pool_class: Any, url: str, connection_options: dict[str, Any]) -> Any:
    """A Sentinel-managed pool for the primary of the service ``url`` names (sync, or asyncio
    when ``pool_class`` is an asyncio pool). ``sentinel_kwargs`` in ``connection_options``
    configure the connections to the Sentinels (e.g. their password)."""
    address = parse_sentinel_url(url)
    asynchronous = isinstance(pool_class, type) and issubclass(pool_class, AsyncConnectionPool)
    sentinel_options = dict(_SENTINEL_DEFAULTS)
    sentinel_options.update(connection_options.pop("sentinel_kwargs", None) or {})
    sentinel_options.setdefault(
        "retry", AsyncRetry(NoBackoff(), 0) if asynchronous else Retry(NoBackoff(), 0))
    options = {"db": address.db, **connection_options}
    if address.username is not None:
        options.setdefault("username", address.username)
    if address.password is not None:
        options.setdefault("password", address.password)
    if asynchronous:
        manager: Any = async_sentinel.Sentinel(list(address.sentinels),  # type: ignore[no-untyped-call]
                                               sentinel_kwargs=sentinel_options)
        return AsyncLoggingSentinelPool(address.service, manager, **options)  # type: ignore[no-untyped-call]
    manager = Sentinel(list(address.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    return LoggingSentinelPool(address.service, manager, **options)


def describe_primary(pool: Any) -> dict[str, str]:
    """``service`` and ``primary`` (``host:port``, once known) of a Sentinel-managed pool; {}
    for any other pool. Reads what the pool last learnt: no I/O."""
    if not isinstance(pool, (SentinelConnectionPool, async_sentinel.SentinelConnectionPool)):
        return {}
    described = {"service": str(pool.service_name)}
    address = pool.master_address
    if address is not None:
        described["primary"] = f"{address[0]}:{address[1]}"
    return described
