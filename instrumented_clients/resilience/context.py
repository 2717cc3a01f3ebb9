"""``ClientContext``: who a component reports as, and the clock and instrumentation it uses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from instrumented_clients.resilience.clock import SYSTEM_CLOCK, Clock
from instrumented_clients.resilience.events import Instrumentation, get_default_instrumentation

__all__ = ["ClientContext"]


@dataclass(frozen=True, slots=True)
class ClientContext:
    """The ``system`` and ``client`` labels of one client, its clock and where it reports.

    Every piece of a client (its guards, breaker, connection tracker) is built from the same
    context, so the four values are chosen once.

    Args:
        system: ``system`` label (``rabbitmq``, ``redis``, ``postgresql``, ...).
        client: ``client`` label, the user's low-cardinality ``name=``.
        clock: time source.
        instrumentation: receives the events (default: the package's default instrumentation).
    """

    system: str
    client: str
    clock: Clock = SYSTEM_CLOCK
    instrumentation: Instrumentation = field(default_factory=get_default_instrumentation)

    def with_system(self, system: str) -> ClientContext:
        """The same context under another ``system`` label (a server identified late)."""
        return dataclasses.replace(self, system=system)
