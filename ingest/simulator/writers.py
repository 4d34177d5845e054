"""Writing simulated calls to files: ``RequestSummary`` JSON lines or Parquet (the simulator's only I/O).

Row ids are ``{id_prefix}-{index:010d}`` in call order; object ids are keyed
hashes (``SimCall.to_row``); ground truth travels in ``ground_truth``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ingest.envelope import arrow_schema, row_to_summary
from ingest.schema import RequestSummary
from ingest.simulator.call import SimCall

__all__ = ["write_jsonl", "write_parquet"]


def _rows(calls: Iterable[SimCall], object_id_key: bytes, id_prefix: str) -> Iterator[dict[str, Any]]:
    for i, call in enumerate(calls):
        yield call.to_row(f"{id_prefix}-{i:010d}", object_id_key)


def write_jsonl(calls: Iterable[SimCall], path: str | Path, object_id_key: bytes, id_prefix: str = "sim") -> int:
    """Write calls as ``RequestSummary`` JSON lines; return the number written."""
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for row in _rows(calls, object_id_key, id_prefix):
            out.write(row_to_summary(row).model_dump_json() + "\n")
            n += 1
    return n


def write_parquet(calls: Iterable[SimCall], path: str | Path, object_id_key: bytes, id_prefix: str = "sim",
                  batch_rows: int = 50_000) -> int:
    """Write calls as a Parquet file with the ``RequestSummary`` Arrow schema; return the number written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, n, batch = arrow_schema(RequestSummary), 0, []
    with pq.ParquetWriter(str(path), schema) as writer:
        for row in _rows(calls, object_id_key, id_prefix):
            batch.append(row)
            if len(batch) >= batch_rows:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                n, batch = n + len(batch), []
        if batch:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
    return n + len(batch)
