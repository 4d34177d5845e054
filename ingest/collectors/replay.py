"""Replay recorded traffic as observations: HAR 1.2 files and JSONL of ``HttpObservation`` dicts.

* ``HarSource`` reads HAR 1.2 archives (browser dev tools, proxies, API
  clients). Each entry becomes ``HttpObservation(reporter="har")`` with the
  request line, headers (lower-case names; HTTP/2 pseudo headers give the
  authority), cookies, request body (``postData.text`` or its ``params``),
  response status (0, "no response", becomes None), headers and body
  (``content.text``, base64 when ``content.encoding`` says so), body sizes
  (``bodySize``, else ``content.size``, else the body's length), total time as
  ``duration_ms``, and ``x-request-id`` / ``traceparent`` as request and trace
  ids. Bodies are capped at ``body_cap`` bytes and flagged as truncated.
* ``JsonlSource`` reads one JSON object per line with ``HttpObservation`` field
  names (``time``, ``method`` and ``path`` required; bodies as UTF-8 text in
  ``request_body`` / ``response_body`` or base64 in ``request_body_b64`` /
  ``response_body_b64``; unknown keys ignored); ``observation_to_dict`` writes that shape.

Both emit in time order. ``speed`` paces them: ``0`` is as fast as possible,
``1`` real time (the gaps between recorded start times), ``2`` twice as fast.
``rebase_time`` moves the recording so that its first call happens when the
replay starts. Unusable entries and lines go to ``on_reject``, never stop a replay.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from ingest.collectors.accesslog import AccessLogError, Rejected, RejectFn, parse_rfc3339
from ingest.collectors.base import Emit, int64
from ingest.observation import HttpObservation

__all__ = ["HarSource", "JsonlSource", "observation_from_dict", "observation_from_har_entry", "observation_to_dict",
           "observations_from_har"]

log = logging.getLogger("kubeward.collectors.replay")

Item = HttpObservation | Rejected


def _cap(body: bytes | None, cap: int) -> tuple[bytes | None, bool]:
    if body is None or len(body) <= cap:
        return body, False
    return body[:cap], True


def _har_headers(items: Any) -> tuple[dict[str, str], str | None]:
    headers: dict[str, str] = {}
    authority = None
    for item in items or []:
        name, value = str(item.get("name", "")).lower(), str(item.get("value", ""))
        if name == ":authority":
            authority = value
        elif name and not name.startswith(":"):
            joiner = "; " if name == "cookie" else ", "
            headers[name] = f"{headers[name]}{joiner}{value}" if name in headers else value
    return headers, authority


def _har_body(data: Mapping[str, Any] | None) -> bytes | None:
    if not data:
        return None
    text = data.get("text")
    if text is None and data.get("params"):
        return urlencode([(p.get("name", ""), p.get("value", "")) for p in data["params"]]).encode()
    if text is None:
        return None
    return base64.b64decode(text) if data.get("encoding") == "base64" else str(text).encode("utf-8")


def _size(*candidates: Any) -> int | None:
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return int64(value)
    return None


def observation_from_har_entry(entry: Mapping[str, Any], body_cap: int = 65536) -> HttpObservation:
    """The observation of one HAR ``entries[]`` item; ``ValueError`` naming the bad field."""
    request, response = entry.get("request") or {}, entry.get("response") or {}
    method, url = request.get("method"), request.get("url")
    if not method or not url:
        raise ValueError(f"HAR entry lacks request.method or request.url (method={method!r}, url={url!r})")
    parts = urlsplit(str(url))
    headers, authority = _har_headers(request.get("headers"))
    if "cookie" not in headers and request.get("cookies"):
        headers["cookie"] = "; ".join(f"{c.get('name')}={c.get('value')}" for c in request["cookies"])
    request_body, request_cut = _cap(_har_body(request.get("postData")), body_cap)
    content = response.get("content") or {}
    response_body, response_cut = _cap(_har_body(content), body_cap)
    response_headers, _ = _har_headers(response.get("headers"))
    traceparent = headers.get("traceparent", "")
    return HttpObservation(
        time=parse_rfc3339(str(entry.get("startedDateTime", ""))), method=str(method).upper(),
        path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""), reporter="har",
        request_id=headers.get("x-request-id"), authority=authority or headers.get("host") or parts.netloc or None,
        headers=headers, status=int64(int(response.get("status") or 0)) or None,
        duration_ms=float(entry["time"]) if isinstance(entry.get("time"), (int, float)) and entry["time"] >= 0 else None,
        request_bytes=_size(request.get("bodySize"), len(request_body or b"")) or 0,
        response_bytes=_size(response.get("bodySize") if response.get("bodySize") else None, content.get("size"),
                             len(response_body or b"")) or 0,
        response_headers=response_headers, request_body=request_body, response_body=response_body,
        request_body_truncated=request_cut, response_body_truncated=response_cut,
        trace_id=traceparent[3:35] if len(traceparent) >= 55 else None,
    )


def observations_from_har(doc: Any, origin: str = "har", body_cap: int = 65536) -> list[Item]:
    """Every entry of a decoded HAR document, as an observation or a ``Rejected`` saying why not."""
    har_log = doc.get("log") if isinstance(doc, dict) else None
    entries = har_log.get("entries") if isinstance(har_log, dict) else None
    if not isinstance(entries, list):
        return [Rejected("bad_har", "no log.entries list", _raw(doc) if doc is not None else b"", origin)]
    out: list[Item] = []
    for index, entry in enumerate(entries):
        try:
            out.append(observation_from_har_entry(entry, body_cap))
        except (ValueError, TypeError, AttributeError, AccessLogError) as exc:
            out.append(Rejected("bad_har_entry", f"entries[{index}]: {exc}", _raw(entry), origin, index))
    return out


def _raw(value: Any) -> bytes:
    """The first 4 KiB of a rejected value as JSON, for its dead letter; empty when orjson cannot write it back
    (it reads 1,024 levels of nesting but writes 254)."""
    try:
        return orjson.dumps(value)[:4096]
    except orjson.JSONEncodeError:
        return b""


# ---------------------------------------------------------------------- JSONL

_FIELDS = {f.name for f in fields(HttpObservation)}
_TEXT = ("method", "path", "reporter", "request_id", "authority", "peer_ip", "route", "decision", "trace_id")
_INTS = ("status", "request_bytes", "response_bytes")
_FLAGS = ("request_body_truncated", "response_body_truncated")


def _checked(doc: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in _TEXT:
        if doc.get(name) is not None:
            if not isinstance(doc[name], str):
                raise ValueError(f"{name}={doc[name]!r} is not a string")
            values[name] = doc[name]
    for name in _INTS:
        if doc.get(name) is not None:
            if not isinstance(doc[name], int) or isinstance(doc[name], bool) or int64(doc[name]) is None:
                raise ValueError(f"{name}={doc[name]!r} is not a 64-bit integer")
            values[name] = doc[name]
    for name in _FLAGS:
        if name in doc:
            values[name] = bool(doc[name])
    return values


def _bodies(doc: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in ("request_body", "response_body"):
        text, b64 = doc.get(name), doc.get(f"{name}_b64")
        if b64 is not None:
            try:
                values[name] = base64.b64decode(b64, validate=True)
            except (binascii.Error, TypeError) as exc:
                raise ValueError(f"{name}_b64 is not base64: {exc}") from None
        elif text is not None:
            values[name] = str(text).encode("utf-8")
    for name in ("headers", "response_headers"):
        mapping = doc.get(name)
        if mapping is not None:
            if not isinstance(mapping, dict):
                raise ValueError(f"{name} is not an object")
            values[name] = {str(k).lower(): str(v) for k, v in mapping.items()}
    return values


def observation_from_dict(doc: Any, reporter: str = "jsonl") -> HttpObservation:
    """The observation of one JSONL record (``HttpObservation`` field names); ``ValueError`` naming the bad field."""
    if not isinstance(doc, dict):
        raise ValueError(f"a JSON {type(doc).__name__}, not an object")
    missing = [name for name in ("time", "method", "path") if doc.get(name) is None]
    if missing:
        raise ValueError(f"missing required fields {missing}")
    if not isinstance(doc["time"], (int, float)) or isinstance(doc["time"], bool):
        raise ValueError(f"time={doc['time']!r} is not Unix seconds")
    values: dict[str, Any] = {"reporter": reporter, **_checked(doc), **_bodies(doc)}
    for name in ("duration_ms",):
        if doc.get(name) is not None:
            values[name] = float(doc[name])
    if doc.get("inline_findings"):
        values["inline_findings"] = tuple(str(f) for f in doc["inline_findings"])
    return HttpObservation(time=float(doc["time"]), **values)


def observation_to_dict(observation: HttpObservation) -> dict[str, Any]:
    """The JSONL record of an observation (bodies as base64, empty fields left out)."""
    out: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(observation, name)
        if value is None or value == () or value == {} or value is False:
            continue
        if name in ("request_body", "response_body"):
            out[f"{name}_b64"] = base64.b64encode(value).decode()
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _jsonl_items(path: Path, reporter: str) -> Iterator[Item]:
    with open(path, "rb") as handle:
        offset = 0
        for number, line in enumerate(handle, 1):
            start, offset = offset, offset + len(line)
            if not line.strip():
                continue
            try:
                yield observation_from_dict(orjson.loads(line), reporter)
            except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
                yield Rejected("bad_jsonl", f"line {number}: {exc}", line[:4096], str(path), start)


# ---------------------------------------------------------------------- pacing


class _Replay:
    """Shared pacing: emit items in time order, as fast as possible or at ``speed`` times real time."""

    name = "replay"

    def __init__(self, paths: Sequence[Path], *, speed: float, rebase_time: bool, batch: int,
                 on_reject: RejectFn | None, clock: Callable[[], float], wall: Callable[[], float]) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0 (0 = as fast as possible), got {speed!r}")
        self.paths = [Path(p) for p in paths]
        self.speed, self.rebase_time, self.batch = speed, rebase_time, batch
        self.on_reject = on_reject
        self._clock, self._wall = clock, wall
        self.emitted = self.rejected = 0

    def items(self) -> Iterable[Item]:
        """Every item of every path (subclasses read their format)."""
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        """Observations emitted and inputs rejected so far."""
        return {"observations": self.emitted, "rejected": self.rejected}

    def run(self, emit: Emit, stop: threading.Event) -> None:
        """Emit every observation in time order, paced by ``speed``; return at the end or when ``stop`` is set."""
        observations = []
        for item in self.items():
            if isinstance(item, Rejected):
                self._reject(item)
            else:
                observations.append(item)
        observations.sort(key=lambda o: o.time)
        if not observations:
            return
        first, started, wall = observations[0].time, self._clock(), self._wall()
        pending: list[HttpObservation] = []
        for observation in observations:
            offset = observation.time - first
            if self.rebase_time:
                observation.time = wall + (offset / self.speed if self.speed else offset)
            if self.speed and not self._wait(started + offset / self.speed, pending, emit, stop):
                return
            pending.append(observation)
            if len(pending) >= self.batch:
                self._flush(pending, emit)
            if stop.is_set():
                break
        self._flush(pending, emit)

    def _wait(self, due: float, pending: list[HttpObservation], emit: Emit, stop: threading.Event) -> bool:
        delay = due - self._clock()
        if delay > 0.001:
            self._flush(pending, emit)
            return not stop.wait(delay)
        return not stop.is_set()

    def _flush(self, pending: list[HttpObservation], emit: Emit) -> None:
        if pending:
            emit(list(pending))
            self.emitted += len(pending)
            pending.clear()

    def _reject(self, rejected: Rejected) -> None:
        self.rejected += 1
        if self.on_reject is not None:
            self.on_reject(rejected)
        else:
            log.warning("unusable replay input", extra={"reason": rejected.reason, "detail": rejected.detail, "origin": rejected.origin})


class HarSource(_Replay):
    """A ``Source`` replaying HAR 1.2 files (see the module docstring)."""

    def __init__(self, paths: Sequence[Path], *, name: str = "har", speed: float = 0.0, rebase_time: bool = False,
                 body_cap: int = 65536, batch: int = 500, on_reject: RejectFn | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        super().__init__(paths, speed=speed, rebase_time=rebase_time, batch=batch, on_reject=on_reject, clock=clock, wall=wall)
        self.name, self.body_cap = name, body_cap

    def items(self) -> Iterator[Item]:
        """Observations and rejects of every HAR file."""
        for path in self.paths:
            try:
                doc = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                yield Rejected("bad_har", f"{path}: {exc}", b"", str(path))
                continue
            yield from observations_from_har(doc, str(path), self.body_cap)


class JsonlSource(_Replay):
    """A ``Source`` replaying JSONL files of ``HttpObservation`` dicts (see the module docstring)."""

    def __init__(self, paths: Sequence[Path], *, name: str = "jsonl", reporter: str = "jsonl", speed: float = 0.0,
                 rebase_time: bool = False, batch: int = 1000, on_reject: RejectFn | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        super().__init__(paths, speed=speed, rebase_time=rebase_time, batch=batch, on_reject=on_reject, clock=clock, wall=wall)
        self.name, self.reporter = name, reporter

    def items(self) -> Iterator[Item]:
        """Observations and rejects of every JSONL file, line by line."""
        for path in self.paths:
            try:
                yield from _jsonl_items(path, self.reporter)
            except OSError as exc:
                yield Rejected("bad_jsonl", f"{path}: {exc}", b"", str(path))
