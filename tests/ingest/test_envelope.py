"""ingest.envelope: Arrow IPC envelopes round-trip, and bad messages say why they are bad."""

from __future__ import annotations

import typing
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from ingest import EnvelopeError, IngestError, RequestSummary, arrow_schema, decode_message, encode_envelope, summaries_from_table
from ingest.envelope import SUMMARY_SCHEMA
from ingest.schema import Destination, Source
from tests.strategies import summaries

MAX = 1 << 30


def _stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _valid_table(summary_factory: Any) -> pa.Table:
    return decode_message(encode_envelope([summary_factory(), summary_factory(principal=None)]), MAX)


@settings(max_examples=40, deadline=None)
@given(st.lists(summaries, max_size=6))
def test_summaries_survive_envelope_round_trip(batch: list[RequestSummary]) -> None:
    data = encode_envelope(batch)
    assert data[:4] == b"\xff\xff\xff\xff"
    table = decode_message(data, MAX)
    assert table.num_rows == len(batch)
    assert summaries_from_table(table) == batch


@settings(max_examples=40, deadline=None)
@given(summaries)
def test_a_json_summary_decodes_to_the_same_record(summary: RequestSummary) -> None:
    table = decode_message(summary.model_dump_json().encode(), MAX)
    assert table.schema.equals(SUMMARY_SCHEMA)
    assert summaries_from_table(table) == [summary]


def test_json_with_leading_whitespace_is_accepted(summary_factory: Any) -> None:
    summary = summary_factory()
    table = decode_message(b"  \n" + summary.model_dump_json().encode(), MAX)
    assert summaries_from_table(table) == [summary]


def test_envelope_is_lz4_compressed_and_smaller_than_json(summary_factory: Any) -> None:
    batch = [summary_factory(object_ids=[f"{i:016x}"]) for i in range(500)]
    data = encode_envelope(batch)
    assert len(data) < sum(len(s.model_dump_json()) for s in batch) / 3


def test_an_empty_envelope_decodes_to_no_rows() -> None:
    table = decode_message(encode_envelope([]), MAX)
    assert table.num_rows == 0 and summaries_from_table(table) == []


# ------------------------------------------------------------------ schema


def test_arrow_schema_has_one_field_per_model_field() -> None:
    schema = arrow_schema(RequestSummary)
    assert schema.names == list(RequestSummary.model_fields)
    assert all(f.nullable for f in schema)
    assert schema.equals(SUMMARY_SCHEMA)


@pytest.mark.parametrize(("field", "model"), [("source", Source), ("destination", Destination), ("mcp", None), ("llm", None), ("ground_truth", None)])
def test_nested_models_become_structs(field: str, model: type[BaseModel] | None) -> None:
    arrow_type = arrow_schema(RequestSummary).field(field).type
    assert pa.types.is_struct(arrow_type)
    annotation = RequestSummary.model_fields[field].annotation
    nested = model or next(a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel))
    assert [arrow_type.field(i).name for i in range(arrow_type.num_fields)] == list(nested.model_fields)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("id", pa.string()),
        ("time", pa.float64()),
        ("status", pa.int64()),
        ("schema_version", pa.int64()),
        ("object_ids", pa.list_(pa.string())),
        ("sensitive", pa.map_(pa.string(), pa.int64())),
    ],
)
def test_scalar_and_container_types(field: str, expected: pa.DataType) -> None:
    assert arrow_schema(RequestSummary).field(field).type.equals(expected)


def test_literal_fields_map_to_their_value_type() -> None:
    class WithLiteral(BaseModel):
        mode: typing.Literal["observe", "enforce"]
        level: typing.Literal[1, 2] | None = None

    schema = arrow_schema(WithLiteral)
    assert schema.field("mode").type.equals(pa.string())
    assert schema.field("level").type.equals(pa.int64())


def test_an_unsupported_annotation_is_a_type_error() -> None:
    class Odd(BaseModel):
        blob: bytes

    with pytest.raises(TypeError, match="bytes"):
        arrow_schema(Odd)


# ------------------------------------------------------------------ rejections


def test_oversized_message_is_rejected_with_sizes(summary_factory: Any) -> None:
    data = encode_envelope([summary_factory() for _ in range(20)])
    with pytest.raises(EnvelopeError, match=rf"message of {len(data)} bytes exceeds max_message_bytes=1024"):
        decode_message(data, max_bytes=1024)


def test_a_message_of_exactly_max_bytes_is_accepted(summary_factory: Any) -> None:
    data = summary_factory().model_dump_json().encode()
    assert decode_message(data, max_bytes=len(data)).num_rows == 1


@pytest.mark.parametrize(
    ("data", "shown"),
    [(b"garbage!!", "b'garbage!'"), (b"", "b''"), (b"\x00\x01\x02", "b'\\x00\\x01\\x02'"), (b"[1, 2]", "b'[1, 2]'")],
    ids=["garbage", "empty", "binary", "json-array"],
)
def test_neither_arrow_nor_json_is_rejected(data: bytes, shown: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode_message(data, MAX)
    assert "neither an Arrow IPC envelope nor a JSON object" in str(info.value)
    assert shown in str(info.value)


def test_truncated_arrow_is_rejected_as_unreadable(summary_factory: Any) -> None:
    data = encode_envelope([summary_factory()])
    with pytest.raises(EnvelopeError, match="unreadable Arrow IPC envelope"):
        decode_message(data[: len(data) // 2], MAX)


def test_arrow_magic_followed_by_garbage_is_unreadable() -> None:
    with pytest.raises(EnvelopeError, match="unreadable Arrow IPC envelope"):
        decode_message(b"\xff\xff\xff\xff" + b"not arrow at all", MAX)


@pytest.mark.parametrize("missing", ["id", "time", "source", "destination", "method", "path_template"])
def test_arrow_missing_a_required_column_is_rejected(summary_factory: Any, missing: str) -> None:
    table = _valid_table(summary_factory).drop_columns([missing])
    with pytest.raises(EnvelopeError) as info:
        decode_message(_stream(table), MAX)
    assert "lacks required columns" in str(info.value)
    assert repr(missing) in str(info.value)


def test_arrow_missing_several_required_columns_names_them_all(summary_factory: Any) -> None:
    table = _valid_table(summary_factory).drop_columns(["method", "time"])
    with pytest.raises(EnvelopeError, match=r"\['time', 'method'\]"):
        decode_message(_stream(table), MAX)


@pytest.mark.parametrize(
    ("column", "values", "shown"),
    [
        ("time", pa.array(["yesterday", "today"]), "column 'time' has type string, expected double"),
        ("status", pa.array([200.0, 404.0]), "column 'status' has type double, expected int64"),
        ("object_ids", pa.array(["a", "b"]), "column 'object_ids' has type string, expected list<item: string>"),
    ],
)
def test_arrow_with_a_wrongly_typed_column_is_rejected(summary_factory: Any, column: str, values: pa.Array, shown: str) -> None:
    table = _valid_table(summary_factory)
    table = table.set_column(table.schema.get_field_index(column), column, values)
    with pytest.raises(EnvelopeError) as info:
        decode_message(_stream(table), MAX)
    assert shown in str(info.value)


def test_arrow_with_an_unknown_extra_column_is_accepted(summary_factory: Any) -> None:
    table = _valid_table(summary_factory).append_column("zz_future_field", pa.array([1, 2]))
    decoded = decode_message(_stream(table), MAX)
    assert decoded.num_rows == 2
    assert [s.id for s in summaries_from_table(decoded)] == [r["id"] for r in table.to_pylist()]


@pytest.mark.parametrize(
    ("doc", "shown"),
    [
        (b'{"id": "x"}', "invalid summary JSON: field 'time': Field required"),
        (b'{"id": "x", "time": "soon", "source": {}, "destination": {"service": "s"}, "method": "GET", "path_template": "/"}',
         "invalid summary JSON: field 'time': Input should be a valid number"),
        (b'{"id": "x", "time": 1, "source": {}, "destination": {}, "method": "GET", "path_template": "/"}',
         "invalid summary JSON: field 'destination.service': Field required"),
        (b'{"id": "x", "time": 1, ', "invalid summary JSON: field '<root>': Invalid JSON"),
    ],
    ids=["missing-field", "bad-type", "nested-missing", "broken-json"],
)
def test_invalid_json_summary_is_rejected_naming_the_field(doc: bytes, shown: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode_message(doc, MAX)
    assert str(info.value).startswith(shown)


def test_envelope_error_is_an_ingest_error() -> None:
    assert issubclass(EnvelopeError, IngestError)


@pytest.mark.parametrize("column", ["time", "method", "path_template", "id"])
def test_arrow_with_nulls_in_a_required_column_is_rejected(summary_factory: Any, column: str) -> None:
    table = _valid_table(summary_factory)
    index = table.schema.get_field_index(column)
    table = table.set_column(index, table.schema.field(index), pa.nulls(table.num_rows, table.schema.field(index).type))
    with pytest.raises(EnvelopeError, match=column):
        decode_message(_stream(table), MAX)
