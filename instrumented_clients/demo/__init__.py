"""The order-flow demo: workload, terminal view and chaos schedule behind ``instrumented-clients
demo``. The dependencies are thin adapters over the raw drivers and the resilience core, each an
object with ``health()`` and ``step()``."""
