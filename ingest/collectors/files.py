"""Tail Envoy / Istio JSON access logs on a node (``AccessLogFileSource``): CRI or plain JSON lines.

Contract:

* **Which files**: every regular file matched by the glob patterns
  (``/var/log/pods/*/istio-proxy/*.log``, ``/var/log/containers/*istio-proxy*.log``),
  ``.gz`` excluded, followed through symlinks and tracked by inode, so a file
  matched twice (the ``/var/log/containers`` symlink and its target) is read once.
* **Lines**: a line starting with ``{`` is one JSON entry; otherwise it must be
  a CRI line (``<time> <stream> <F|P> <message>``) and ``P`` chunks of one
  stream are joined up to the next ``F``. Entries are mapped by
  ``ingest.collectors.accesslog.observation_from_envoy``.
* **Rotation**: the pattern is rescanned every ``poll_s``. A file whose inode no
  longer matches (renamed by the kubelet or logrotate, or deleted) stays open
  and is read to its end; it is closed once it has been gone for
  ``rotate_wait_s`` and fully read. A file that shrank or whose first bytes
  changed (copytruncate) is read again from offset 0. Files that appear after
  start are read from their beginning.
* **Offsets**: ``snapshot()`` returns, per inode, the offset just past the last
  entry handed to ``emit`` (a CRI partial group not yet completed is not
  passed), with the path and a fingerprint (the first 1 KiB); ``commit``
  writes a snapshot to ``state_path`` atomically (temporary file, fsync,
  rename). At start a saved offset is resumed when the inode's fingerprint
  still matches; the collector (``ingest.collectors.runner``) decides when a
  snapshot is safe to commit. Without any state file, files present at start
  begin at ``initial_position`` (``end`` skips history on first deployment);
  with one, files unknown to it are new and begin at 0.
* **Bad input never stops the tail**: a line that is not JSON, lacks required
  fields, or exceeds ``max_line_bytes`` goes to ``on_reject`` as a
  ``Rejected`` with a reason code; text lines may instead be skipped
  (``text_lines="skip"``: istio-proxy also writes its own text logs) and counted.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson

from ingest.collectors.accesslog import AccessLogError, Rejected, RejectFn, observation_from_envoy
from ingest.collectors.base import Emit
from ingest.observation import HttpObservation

__all__ = ["AccessLogFileSource", "FileSnapshot", "write_atomic"]

log = logging.getLogger("kubeward.collector.files")

FINGERPRINT_BYTES = 1024
_STATE_VERSION = 1
FileSnapshot = dict[str, dict[str, Any]]


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temporary file in the same folder, fsync, rename, fsync folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class _File:
    __slots__ = ("key", "path", "fd", "read_pos", "committed", "buf", "skipping", "partial", "partial_start",
                 "partial_size", "gone_since", "fingerprint")

    def __init__(self, key: str, path: str, fd: int, position: int, fingerprint: bytes) -> None:
        self.key, self.path, self.fd = key, path, fd
        self.read_pos = self.committed = position
        self.buf = b""
        self.skipping = False
        self.partial: dict[bytes, list[bytes]] = {}
        self.partial_start: dict[bytes, int] = {}
        self.partial_size: dict[bytes, int] = {}
        self.gone_since: float | None = None
        self.fingerprint = fingerprint

    def reset(self) -> None:
        self.read_pos = self.committed = 0
        self.buf, self.skipping = b"", False
        self.partial.clear()
        self.partial_start.clear()
        self.partial_size.clear()


class AccessLogFileSource:
    """A ``Source`` tailing JSON access logs; see the module docstring for the contract.

    Parameters
    ----------
    patterns: glob patterns of the log files.
    state_path: where offsets are committed (None: nowhere, start from ``initial_position``).
    initial_position: where files present at the first start (no state file yet) begin.
    poll_s: how often the patterns are rescanned, and the wait when nothing new was read.
    rotate_wait_s: how long a rotated-away file is still read after it disappeared.
    text_lines: what happens to lines that are not JSON: ``dead_letter`` or ``skip`` (counted).
    on_reject: receives unusable lines (the collector sets it to its dead-letter publisher).
    """

    def __init__(self, patterns: Sequence[str], *, name: str = "files", state_path: Path | None = None,
                 initial_position: Literal["beginning", "end"] = "end", poll_s: float = 0.25,
                 rotate_wait_s: float = 5.0, chunk_bytes: int = 1 << 20, max_line_bytes: int = 1 << 20,
                 text_lines: Literal["dead_letter", "skip"] = "dead_letter", reporter: str = "access_log",
                 on_reject: RejectFn | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if not patterns:
            raise ValueError("patterns is empty; give at least one glob of access-log files")
        self.name = name
        self.patterns = tuple(patterns)
        self.state_path = state_path
        self.initial_position = initial_position
        self.poll_s, self.rotate_wait_s = poll_s, rotate_wait_s
        self.chunk_bytes, self.max_line_bytes = chunk_bytes, max_line_bytes
        self.text_lines, self.reporter = text_lines, reporter
        self.on_reject = on_reject
        self._clock = clock
        self._files: dict[str, _File] = {}
        self._lock = threading.Lock()
        self._saved: dict[str, dict[str, Any]] | None = None
        self._first_scan = True
        self._next_scan = 0.0
        self._stop: threading.Event | None = None
        self._counts = {"lines": 0, "entries": 0, "skipped_text": 0, "rejected": 0, "truncated": 0, "rotated": 0,
                        "open_errors": 0}

    # ------------------------------------------------------------------ Source

    def run(self, emit: Emit, stop: threading.Event) -> None:
        """Tail until ``stop`` is set; the open files are closed on return, their offsets kept for ``snapshot``."""
        self._stop = stop
        try:
            while not stop.is_set():
                if self.poll_once(emit) == 0:
                    stop.wait(self.poll_s)
        finally:
            self._stop = None
            self.close()

    def poll_once(self, emit: Emit) -> int:
        """One round: rescan when due, read what every file has, retire drained rotated files; bytes read."""
        now = self._clock()
        if now >= self._next_scan:
            self._scan(now)
            self._next_scan = now + self.poll_s
        read = 0
        for tracked in sorted(self._files.values(), key=lambda f: f.gone_since is None):
            if self._stop is not None and self._stop.is_set():
                break
            if tracked.fd >= 0:
                read += self._drain(tracked, emit)
        self._retire(now)
        return read

    def close(self) -> None:
        """Close every file descriptor; offsets stay available to ``snapshot``."""
        with self._lock:
            for tracked in self._files.values():
                if tracked.fd >= 0:
                    os.close(tracked.fd)
                    tracked.fd = -1

    def counters(self) -> dict[str, int]:
        """Monotonic counts: lines read, entries emitted, skipped text lines, rejects, truncations, rotations."""
        return dict(self._counts)

    # ------------------------------------------------------------------ offsets

    def snapshot(self) -> FileSnapshot:
        """Offsets of everything emitted so far, per inode (``dev:ino``), with path and fingerprint."""
        with self._lock:
            return {f.key: {"path": f.path, "offset": f.committed, "fingerprint": f.fingerprint.hex()}
                    for f in self._files.values()}

    def commit(self, snapshot: FileSnapshot) -> None:
        """Write a snapshot to ``state_path`` atomically (no-op without a state path)."""
        if self.state_path is not None:
            write_atomic(self.state_path, json.dumps({"version": _STATE_VERSION, "files": snapshot}).encode())

    def _load_state(self) -> dict[str, dict[str, Any]] | None:
        if self.state_path is None or not self.state_path.exists():
            return None
        try:
            doc = json.loads(self.state_path.read_bytes())
            files = doc["files"]
            if doc.get("version") != _STATE_VERSION or not isinstance(files, dict):
                raise ValueError(f"version={doc.get('version')!r}")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("offset state unreadable; starting over", extra={"path": str(self.state_path), "error": repr(exc)})
            return {}
        return {str(k): v for k, v in files.items() if isinstance(v, dict)}

    # ------------------------------------------------------------------ discovery

    def _matches(self) -> dict[str, tuple[str, os.stat_result]]:
        seen: dict[str, tuple[str, os.stat_result]] = {}
        for pattern in self.patterns:
            for path in sorted(glob.glob(pattern)):
                if path.endswith(".gz"):
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    seen.setdefault(f"{st.st_dev}:{st.st_ino}", (path, st))
        return seen

    def _scan(self, now: float) -> None:
        if self._first_scan:
            self._saved = self._load_state()
        seen = self._matches()
        for key, tracked in list(self._files.items()):
            if tracked.fd < 0:  # closed by an earlier run(): resume from what was emitted
                with self._lock:
                    del self._files[key]
                if key in seen:
                    self._saved = {**(self._saved or {}), key: {"offset": tracked.committed, "fingerprint": tracked.fingerprint.hex()}}
                continue
            if key in seen:
                tracked.path, tracked.gone_since = seen[key][0], None
            elif tracked.gone_since is None:
                tracked.gone_since = now
            self._check_truncation(tracked)
        for key, (path, _) in seen.items():
            if key not in self._files:
                self._open(key, path)
        self._first_scan, self._saved = False, None

    def _start_position(self, key: str, fd: int, size: int, head: bytes) -> int:
        saved = (self._saved or {}).get(key)
        if saved is not None:
            offset, fingerprint = saved.get("offset"), bytes.fromhex(str(saved.get("fingerprint", "")))
            if isinstance(offset, int) and 0 <= offset <= size and head.startswith(fingerprint):
                return offset
            return 0
        if self._first_scan and self._saved is None and self.initial_position == "end":
            return _line_start_before(fd, size)
        return 0

    def _open(self, key: str, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._counts["open_errors"] += 1
            log.warning("cannot open access log", extra={"path": path, "error": repr(exc)})
            return
        st = os.fstat(fd)
        if f"{st.st_dev}:{st.st_ino}" != key:  # replaced between stat and open: the next scan sees the new one
            os.close(fd)
            return
        head = os.pread(fd, FINGERPRINT_BYTES, 0)
        tracked = _File(key, path, fd, self._start_position(key, fd, st.st_size, head), head)
        with self._lock:
            self._files[key] = tracked
        log.info("tailing access log", extra={"path": path, "offset": tracked.read_pos})

    def _check_truncation(self, tracked: _File) -> None:
        size = os.fstat(tracked.fd).st_size
        head = os.pread(tracked.fd, FINGERPRINT_BYTES, 0)
        if size < tracked.read_pos or not head.startswith(tracked.fingerprint):
            self._counts["truncated"] += 1
            log.info("access log truncated; reading it from the start", extra={"path": tracked.path, "size": size})
            with self._lock:
                tracked.reset()
        tracked.fingerprint = head

    def _retire(self, now: float) -> None:
        for key, tracked in list(self._files.items()):
            if tracked.gone_since is None or now - tracked.gone_since < self.rotate_wait_s:
                continue
            if tracked.fd >= 0 and os.fstat(tracked.fd).st_size > tracked.read_pos:
                continue
            for stream, chunks in tracked.partial.items():
                self._reject("incomplete_line", "CRI partial line never completed", b"".join(chunks), tracked,
                             tracked.partial_start[stream])
            if tracked.buf:
                self._reject("incomplete_line", "last line has no newline", tracked.buf, tracked, tracked.read_pos - len(tracked.buf))
            if tracked.fd >= 0:
                os.close(tracked.fd)
            with self._lock:
                del self._files[key]
            self._counts["rotated"] += 1
            log.info("finished rotated access log", extra={"path": tracked.path, "offset": tracked.read_pos})

    # ------------------------------------------------------------------ reading

    def _drain(self, tracked: _File, emit: Emit) -> int:
        """Read what the file has now, at most 4 chunks (one busy file must not delay rescans, other files or stop)."""
        read = 0
        for _ in range(4):
            data = os.pread(tracked.fd, self.chunk_bytes, tracked.read_pos)
            if not data:
                break
            self._consume(tracked, data, emit)
            read += len(data)
        return read

    def _consume(self, tracked: _File, data: bytes, emit: Emit) -> None:
        base = tracked.read_pos - len(tracked.buf)
        tracked.read_pos += len(data)
        if tracked.buf:
            data = tracked.buf + data
        if tracked.skipping:
            newline = data.find(b"\n")
            if newline < 0:
                tracked.buf = b""
                return
            data, base, tracked.skipping = data[newline + 1:], base + newline + 1, False
        cut = data.rfind(b"\n")
        if cut < 0:
            tracked.buf = data
            if len(data) > self.max_line_bytes:
                self._reject("line_too_long", f"no newline within {self.max_line_bytes} bytes", data[:4096], tracked, base)
                tracked.buf, tracked.skipping = b"", True
            return
        tracked.buf = data[cut + 1:]
        lines = data[:cut].split(b"\n")
        observations = self._parse(tracked, lines, base)
        if observations:
            emit(observations)
        with self._lock:
            starts = tracked.partial_start
            tracked.committed = min(starts.values()) if starts else (tracked.read_pos - len(tracked.buf) if not tracked.skipping else tracked.read_pos)
        self._counts["lines"] += len(lines)
        self._counts["entries"] += len(observations)

    def _parse(self, tracked: _File, lines: list[bytes], pos: int) -> list[HttpObservation]:
        out: list[HttpObservation] = []
        append, loads, convert, reporter = out.append, orjson.loads, observation_from_envoy, self.reporter
        partial = tracked.partial
        for line in lines:
            start = pos
            pos += len(line) + 1
            if not line:
                continue
            line_time: bytes | None = None
            if line[0] == 123:  # "{": a plain JSON line
                message = line
            else:
                parts = line.split(b" ", 3)
                if len(parts) == 4 and parts[2] == b"F" and parts[3][:1] == b"{" and not partial:
                    message, line_time = parts[3], parts[0]  # the common CRI line: what _cri answers, inline
                else:
                    cri = self._cri(tracked, line, start)
                    if cri is None:
                        continue
                    message, line_time = cri
            try:
                doc = loads(message)
                if type(doc) is not dict:
                    raise AccessLogError("not_object", f"a JSON {type(doc).__name__}, not an object")
                # Latin-1: any byte decodes, and a time that is not ASCII is then refused as bad_time, not raised
                append(convert(doc, reporter, None if line_time is None or "start_time" in doc else line_time.decode("latin-1")))
            except orjson.JSONDecodeError as exc:
                self._reject("bad_json", str(exc), message, tracked, start)
            except AccessLogError as exc:
                self._reject(exc.reason, exc.detail, message, tracked, start)
        return out

    def _cri(self, tracked: _File, line: bytes, start: int) -> tuple[bytes, bytes] | None:
        """The complete message and time of a CRI line, or None (partial kept, or rejected/skipped)."""
        parts = line.split(b" ", 3)
        if len(parts) < 3 or parts[2] not in (b"F", b"P"):
            self._text_line("neither JSON nor a CRI log line", line, tracked, start)
            return None
        stream, message = parts[1], parts[3] if len(parts) == 4 else b""
        if parts[2] == b"P":
            self._partial(tracked, stream, message, start)
            return None
        chunks = tracked.partial.pop(stream, None)
        if chunks is not None:
            group_start = tracked.partial_start.pop(stream)
            dropped = tracked.partial_size.pop(stream) > self.max_line_bytes
            if dropped:
                self._reject("line_too_long", f"CRI line over {self.max_line_bytes} bytes", b"".join(chunks)[:4096], tracked, group_start)
                return None
            chunks.append(message)
            message, start = b"".join(chunks), group_start
        if message[:1] != b"{":
            self._text_line("a text line, not a JSON access-log entry", message, tracked, start)
            return None
        return message, parts[0]

    def _partial(self, tracked: _File, stream: bytes, message: bytes, start: int) -> None:
        chunks = tracked.partial.get(stream)
        if chunks is None:
            chunks = tracked.partial[stream] = []
            tracked.partial_start[stream], tracked.partial_size[stream] = start, 0
        tracked.partial_size[stream] += len(message)
        if tracked.partial_size[stream] <= self.max_line_bytes:  # past it, only the head is kept (for the dead letter)
            chunks.append(message)

    def _text_line(self, detail: str, raw: bytes, tracked: _File, start: int) -> None:
        if self.text_lines == "skip":
            self._counts["skipped_text"] += 1
        else:
            self._reject("not_json", detail, raw, tracked, start)

    def _reject(self, reason: str, detail: str, raw: bytes, tracked: _File, offset: int) -> None:
        self._counts["rejected"] += 1
        if self.on_reject is not None:
            self.on_reject(Rejected(reason, detail, raw, tracked.path, offset))
        else:
            log.warning("unusable access-log line", extra={"reason": reason, "detail": detail, "path": tracked.path, "offset": offset})


def _line_start_before(fd: int, size: int, window: int = 1 << 16) -> int:
    """The offset just past the last newline before ``size`` (0 when none in the last ``window`` bytes)."""
    start = max(0, size - window)
    tail = os.pread(fd, size - start, start)
    newline = tail.rfind(b"\n")
    return start + newline + 1 if newline >= 0 else (size if start > 0 else 0)
