"""deploy.lab.worker_cost: the A/B cost probe runs and measures what it says."""

from __future__ import annotations

from deploy.lab.worker_cost import batch_cost


def test_batch_cost_measures_batches_of_the_given_size() -> None:
    small, larger = batch_cost(2, total=600), batch_cost(50, total=600)
    assert small["batches"] == 300 - 75 and larger["batches"] == 12 - 3
    assert small["cpu_ms_per_batch"] > 0 and larger["cpu_ms_per_batch"] > 0
