"""The local runtime: the real parts a user runs, started on 127.0.0.1 (Kafka broker, processes, proxies, demo API)."""
