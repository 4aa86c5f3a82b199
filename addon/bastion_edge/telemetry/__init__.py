"""What the on-call engineer sees: Prometheus metrics, the JSON access log, health."""
