"""The lab: demo, traffic driver, tally, benchmarks, evaluations and comparisons."""
