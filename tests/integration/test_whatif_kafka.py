"""``kubeward whatif --kafka`` against the real local broker: the same figures as from Parquet of the same rows, no group left behind."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kafka import KafkaAdminClient

from deploy.cli import main
from ingest.envelope import SUMMARY_SCHEMA
from ingest.publish import SummaryPublisher
from ingest.simulator import ClusterSimulator, plan_attacks

pytestmark = pytest.mark.integration

KEY = b"kubeward-dev-object-key"


def _rows(start: float) -> list[dict[str, Any]]:
    """40 simulated seconds from ``start`` (seed 3, every attack kind after 10 s), in (time, id) order."""
    sim = ClusterSimulator(seed=3, users=300, start_time=start, attacks=plan_attacks(3, 40.0, 10.0), benign_rate_eps=50.0)
    rows = [call.to_row(f"wi-{i:06d}", KEY) for i, call in enumerate(sim.calls(40.0))]
    return sorted(rows, key=lambda r: (r["time"], r["id"]))


def _groups(bootstrap: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {str(g.get("group_id") if isinstance(g, dict) else g[0]) for g in admin.list_groups()}
    finally:
        admin.close()


def test_whatif_reads_the_summaries_topic_and_agrees_with_the_parquet_of_the_same_rows(kafka_bootstrap: str, tmp_path: Path) -> None:
    since = time.time() - 1.0  # rows other tests published earlier in the session are older than this
    rows = _rows(time.time())
    parquet, labels = tmp_path / "rows.parquet", tmp_path / "labels.jsonl"
    pq.write_table(pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA), parquet)
    labels.write_text("".join(json.dumps({"id": r["id"], "malicious": r["ground_truth"]["malicious"]}) + "\n" for r in rows))
    with SummaryPublisher(kafka_bootstrap) as pub:
        for at in range(0, len(rows), 250):
            pub.publish_rows(rows[at : at + 250])
        pub.flush()
        assert pub.stats()["rows_failed"] == 0
    groups_before = _groups(kafka_bootstrap)
    when = datetime.fromtimestamp(since, timezone.utc).isoformat()
    common = ["--labels", str(labels), "--enforce", "shop", "--enforce", "identity", "--quiet"]
    assert main(["whatif", "--kafka", "--bootstrap", kafka_bootstrap, "--since", when, *common, "--out", str(tmp_path / "kafka.json")]) == 0
    assert main(["whatif", "--parquet", str(parquet), *common, "--out", str(tmp_path / "parquet.json")]) == 0
    from_kafka, from_parquet = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("kafka", "parquet"))
    assert from_kafka["rows"] == len(rows)
    assert from_kafka["candidate"]["refused"]["requests"] > 0 and from_kafka["candidate"]["labels"]["attackers_caught"] >= 1
    for key in ("rows", "actors", "first_time", "last_time", "already_refused", "labels", "baseline", "candidate", "difference"):
        assert from_kafka[key] == from_parquet[key], key
    after = _groups(kafka_bootstrap)  # a fresh consumer with no group: the workers see nothing of it
    assert after == groups_before and not any("whatif" in g for g in after)
