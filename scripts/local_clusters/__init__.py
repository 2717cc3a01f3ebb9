"""Local clusters for failover tests: a RabbitMQ cluster, a PostgreSQL primary + standby."""
