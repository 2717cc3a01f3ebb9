"""Public test helpers: a fake clock, captured telemetry, a fault-injecting proxy, polling, free
ports."""

from instrumented_clients.testing.capture import CapturedTelemetry
from instrumented_clients.testing.clock import FakeClock
from instrumented_clients.testing.ports import free_port
from instrumented_clients.testing.proxy import FaultProxy, ProxyMode
from instrumented_clients.testing.wait import await_until, wait_until

__all__ = [
    "CapturedTelemetry",
    "FakeClock",
    "FaultProxy",
    "ProxyMode",
    "await_until",
    "free_port",
    "wait_until",
]
