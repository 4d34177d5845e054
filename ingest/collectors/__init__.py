"""Per-node collectors: each source yields ``HttpObservation`` records (``ingest.collectors.base.Source``),
the collector joins observations of one call by request id, derives summaries and publishes them."""
