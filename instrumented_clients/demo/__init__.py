"""The order-flow demo behind ``instrumented-clients demo``: the library's own clients
(``ResilientDatabase``, ``ResilientRedis``, ``ResilientPublisher``, ``ResilientConsumer``) driven by
a workload, with a terminal view, a chaos schedule and the health endpoints."""
