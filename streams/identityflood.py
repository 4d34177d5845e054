"""A flood of new identities as a signal: many actors never seen before, from one source or towards one service.

``IdentityFlood`` is an ``Enricher`` (``streams.batch``). An *identity* is an actor
(``workload or ip | principal``, the key per-actor state is kept under); it is
*new* when no row carried it within the memory of ``SeenFilter``. Rotating the
client address, a token, an API key or a session cookie makes a new identity per
call: each would start with empty counts of its own and cost the worker a state
row, so the rotation itself is the finding. New identities are counted per
window (``window_s``) in two kinds of group:

* **source**: the calling workload when the row has one (one compromised pod
  minting principals), else the client address's network, ``/24`` for IPv4 and
  ``/64`` for IPv6 (one host holds a whole ``/64``), else the address as written;
* **service**: the destination service (a distributed flood towards one API).

Per row (first copies only, ``BatchView.first``), once the enricher has run for
``learn_s`` (every identity is new when a worker starts):

* ``new_identity``: 1 on the first row of an identity not seen before;
* ``identity_flood_source`` / ``identity_flood_service``: on the new identity that
  takes its group's count in the window to ``max(floor, factor * baseline)``, that
  count, once per group and window. The baseline is an EWMA of the group's past
  windows (quiet ones included), fed only by windows that raised no flood and,
  once learning is over, stayed under ``near`` (half) of their line, so a flood
  that lasts does not become its own normal, nor does one that starts mid-window:
  its first, partial window would otherwise lift the line above the flood (one
  address rotating keys at 1/s from 24 s into a window: 36 new keys made the
  line 72, over the 60 a minute that followed, and the flood was never marked).

Bounded: the seen identities live in two Bloom filters of ``bits`` bits each
(512 KiB each by default; a generation is full after ``capacity`` insertions,
262,144 by default, and then becomes the older one; an identity seen in the
older one is entered again, so identities in use stay known; at most about 1 in 700
new identities at capacity reads as seen); groups are a ``KeyTable`` of
``max_groups`` (least recently seen evicted first, counted in ``evicted``).
Memory does not depend on how many identities arrive: a flood of millions
rotates generations and evicts groups, it does not grow the enricher.

Per partition, like every enricher: summaries are keyed by actor, so with P
partitions each sees about 1/P of a flood's new identities; the floors are per
partition (a flood must be about P times the floor to be seen everywhere).
Known limits: identities idle for longer than about two generations' worth of
new identities count as new again when they return (size ``capacity`` to the
identities in use); a flood through a long IPv4 range (many ``/24``) shows only
per service. Vectorised: Python work per batch is a loop over the distinct
windows its new identities fall in, and per new identity only a memoised
network prefix. ``export``/``restore`` carry the state as ``numpy.savez`` bytes.
"""

from __future__ import annotations

import io
import ipaddress
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from streams.batch import SMALL_BATCH, BatchView, Signals, hash64
from streams.credstate import Groups
from streams.keytable import KeyTable, mix

__all__ = ["IdentityFlood", "IdentityFloodConfig", "SeenFilter", "network_of"]

_U = npt.NDArray[np.uint64]
_B = npt.NDArray[np.bool_]
_F = npt.NDArray[np.float64]
_I = npt.NDArray[np.intp]

#: tags keeping the two kinds of group (and a workload from an address of the same text) apart in one table
_SOURCE, _SERVICE, _WORKLOAD = np.uint64(0x5EED_0001), np.uint64(0x5EED_0002), np.uint64(0x5EED_0003)
_PREFIX_MEMO = 1 << 14
#: actor keys remembered as known in plain Python (a batch of known actors then costs a few dictionary probes); kept
#: under half a generation, so an actor served from here is still in one of the filters when this is emptied
_KNOWN_MAX = 8192


@dataclass(frozen=True)
class IdentityFloodConfig:
    """Windows, thresholds and memory bounds (see the module docstring)."""

    window_s: float = 60.0
    learn_s: float = 180.0
    source_floor: float = 50.0
    service_floor: float = 200.0
    factor: float = 10.0
    alpha: float = 0.2
    near: float = 0.5
    capacity: int = 1 << 18
    bits: int = 1 << 22
    hashes: int = 7
    max_groups: int = 20_000

    def __post_init__(self) -> None:
        if self.window_s <= 0 or not 0 < self.alpha <= 1:
            raise ValueError(f"IdentityFloodConfig: window_s must be > 0 and alpha in (0, 1], got {self.window_s!r}, {self.alpha!r}")
        if not 0 < self.near <= 1:
            raise ValueError(f"IdentityFloodConfig.near must be in (0, 1], got {self.near!r}")
        if self.bits < 64 or self.bits & (self.bits - 1):
            raise ValueError(f"IdentityFloodConfig.bits must be a power of two >= 64, got {self.bits!r}")
        for name in ("learn_s", "source_floor", "service_floor", "factor"):
            if getattr(self, name) < 0:
                raise ValueError(f"IdentityFloodConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("capacity", "hashes", "max_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"IdentityFloodConfig.{name} must be >= 1, got {getattr(self, name)!r}")

    @classmethod
    def from_windows(cls, window_s: float, learn_windows: int) -> IdentityFloodConfig:
        """The worker's window and learning period (``learn_windows`` windows of ``window_s``)."""
        return cls(window_s=float(window_s), learn_s=float(window_s * learn_windows))


class SeenFilter:
    """Two generations of a Bloom filter over 64-bit hashes: ``add`` says which were new and enters them.

    >>> seen = SeenFilter(capacity=4, bits=1024, hashes=3)
    >>> seen.add(np.array([1, 2, 1], dtype=np.uint64)).tolist(), seen.add(np.array([2, 3], dtype=np.uint64)).tolist()
    ([True, True, False], [False, True])
    """

    def __init__(self, capacity: int, bits: int, hashes: int) -> None:
        self.capacity, self.bits, self.hashes = capacity, bits, hashes
        self.current: _U = np.zeros(bits // 64, dtype=np.uint64)
        self.previous: _U = np.zeros(bits // 64, dtype=np.uint64)
        self.added = 0
        self.rotations = 0

    def _positions(self, h: _U) -> _U:
        step = mix(h) | np.uint64(1)  # double hashing: h + i * step, an odd step
        i = np.arange(self.hashes, dtype=np.uint64)[:, None]
        with np.errstate(over="ignore"):
            return (h[None, :] + i * step[None, :]) & np.uint64(self.bits - 1)

    @staticmethod
    def _holds(words: _U, pos: _U) -> _B:
        bit = (words[(pos >> np.uint64(6)).astype(np.intp)] >> (pos & np.uint64(63))) & np.uint64(1)
        return np.asarray(bit.all(axis=0), dtype=bool)

    def add(self, h: _U) -> _B:
        """Per hash: not seen before (in neither generation, nor earlier in ``h``); every hash is entered."""
        h = np.asarray(h, dtype=np.uint64)
        new = np.zeros(len(h), dtype=bool)
        if not len(h):
            return new
        uniq, first = np.unique(h, return_index=True)
        pos = self._positions(uniq)
        in_current = self._holds(self.current, pos)
        fresh = ~in_current
        unseen = fresh & ~self._holds(self.previous, pos)
        entered = pos[:, fresh]
        np.bitwise_or.at(self.current, (entered >> np.uint64(6)).astype(np.intp), np.uint64(1) << (entered & np.uint64(63)))
        self.added += int(fresh.sum())
        if self.added >= self.capacity:
            self.previous, self.current = self.current, np.zeros_like(self.current)
            self.added, self.rotations = 0, self.rotations + 1
        new[first[unseen]] = True
        return new


def network_of(address: str) -> str:
    """The network a client address stands for: its ``/24`` (IPv4) or ``/64`` (IPv6); other text as it is.

    >>> network_of("203.0.113.7"), network_of("2001:db8:1:2:3::9"), network_of("::ffff:10.1.2.3"), network_of("pod-a")
    ('203.0.113.0/24', '2001:db8:1:2::/64', '10.1.2.0/24', 'pod-a')
    """
    head, dot, last = address.rpartition(".")
    if dot and last.isdigit() and head.count(".") == 2 and head.replace(".", "").isdigit():  # dotted IPv4: no parsing
        return f"{head}.0/24"
    try:
        addr = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


class IdentityFlood:
    """The stateful enricher of new identities and their floods (see the module docstring)."""

    name = "identityflood"
    signals: tuple[str, ...] = ("new_identity", "identity_flood_source", "identity_flood_service")

    def __init__(self, config: IdentityFloodConfig | None = None) -> None:
        self.config = c = config or IdentityFloodConfig()
        self.seen = SeenFilter(c.capacity, c.bits, c.hashes)
        self.groups = KeyTable(c.max_groups, {"window": np.int64, "count": np.float64, "baseline": np.float64, "fired": np.int64})
        self.start: float | None = None
        self.new_identities = 0
        self.floods = 0
        self._networks: dict[str, str] = {}
        self._known: dict[str, None] = {"-|-": None}
        self._known_max = min(_KNOWN_MAX, c.capacity // 2)

    @property
    def evicted(self) -> int:
        """Groups dropped to stay within ``max_groups``."""
        return self.groups.evicted

    def enrich(self, batch: BatchView) -> Signals:
        out = {name: np.zeros(batch.n, np.float64) for name in self.signals}
        rows = np.flatnonzero(batch.first & np.isfinite(batch.time))
        if not len(rows):
            return out
        rows = rows[np.argsort(batch.time[rows], kind="stable")]
        if self.start is None:
            self.start = float(batch.time[rows[0]])
        known = self._known
        if len(batch.actors) <= SMALL_BATCH and all(a in known for a in batch.actors):
            return out
        actors = batch.actor_of_row[rows]
        _, first = np.unique(actors, return_index=True)  # each actor's first row in time order
        first.sort()
        named = np.array([k != "-|-" for k in batch.actors], dtype=bool)[actors[first]]
        first = first[named]
        new = self.seen.add(hash64(batch.actor_keys)[actors[first]])
        self._remember([batch.actors[a] for a in actors[first].tolist()])
        events = rows[first[new]]
        if not len(events):
            return out
        out["new_identity"][events] = 1.0
        self.new_identities += len(events)
        t = batch.time[events]
        c = self.config
        self._count(self._source_keys(batch, events), t, events, c.source_floor, out["identity_flood_source"])
        self._count(mix(batch.service_hash[events] ^ _SERVICE), t, events, c.service_floor, out["identity_flood_service"])
        self.groups.evict_oldest()
        return out

    def _remember(self, actors: list[str]) -> None:
        """Note actors just entered in the filters as known (small batches only: a large one takes the vectorised path)."""
        if len(actors) > SMALL_BATCH:
            return
        if len(self._known) + len(actors) > self._known_max:
            self._known.clear()
            self._known["-|-"] = None  # no identity at all: never new
        self._known.update(dict.fromkeys(actors))

    def _source_keys(self, batch: BatchView, events: _I) -> _U:
        """The source group of each new identity: its workload, else its address's network."""
        take = pa.array(events)
        workload = batch.source_workload.take(take)
        by_workload = hash64(workload)
        ips = batch.source_ip.take(take).to_pylist()
        nets = pa.array([None if ip is None else self._network(ip) for ip in ips], pa.string())
        return np.where(by_workload != 0, mix(by_workload ^ _WORKLOAD), mix(hash64(nets) ^ _SOURCE))

    def _network(self, ip: str) -> str:
        found = self._networks.get(ip)
        if found is None:
            if len(self._networks) >= _PREFIX_MEMO:
                self._networks.clear()
            found = self._networks[ip] = network_of(ip)
        return found

    def _count(self, keys: _U, t: _F, rows: _I, floor: float, signal: _F) -> None:
        """Count new identities per group and window; mark the one that makes a window a flood."""
        c, table = self.config, self.groups
        windows = np.floor(t / c.window_s).astype(np.int64)
        slots = table.upsert(keys, t)[0]
        learned = t - (self.start or 0.0) >= c.learn_s
        for w in np.unique(windows).tolist():  # one window per batch but at a boundary
            sel = windows == w
            self._close(np.unique(slots[sel]), w, floor)
            cols = table.cols
            live = sel & (cols["window"][slots] == w)  # a row from a window the group has left is not counted
            s = slots[live]
            if not len(s):
                continue
            cum = cols["count"][s] + Groups.of(s).cumsum(np.ones(len(s)))
            threshold = np.maximum(floor, c.factor * cols["baseline"][s])
            over = np.flatnonzero(learned[live] & (cols["fired"][s] != w) & (cum >= threshold))
            if len(over):  # the first row of each group at or past its threshold (past it: learning ended mid-flood)
                over = over[np.unique(s[over], return_index=True)[1]]
                signal[rows[live][over]] = cum[over]
                cols["fired"][s[over]] = w
                self.floods += len(over)
            np.add.at(cols["count"], s, 1.0)

    def _close(self, slots: _I, w: int, floor: float) -> None:
        """Close the windows of groups still in an earlier one into their baselines (empty windows since decay them).

        A flood window does not teach the baseline, nor, after learning, one that reached ``near`` of its line.
        """
        c, cols = self.config, self.groups.cols
        behind = slots[cols["window"][slots] < w]
        if not len(behind):
            return
        window = cols["window"][behind]
        gap = (w - window).astype(np.float64)
        base, count = cols["baseline"][behind], cols["count"][behind]
        learning = window * c.window_s - (self.start or 0.0) < c.learn_s
        near = count >= c.near * np.maximum(floor, c.factor * base)
        quiet = (cols["fired"][behind] != window) & (learning | ~near)
        a = c.alpha
        base = np.where(quiet, (1 - a) * base + a * count, base)
        cols["baseline"][behind] = base * np.power(1 - a, np.minimum(gap - 1, 1e4))
        cols["count"][behind] = 0.0
        cols["window"][behind] = w

    def export(self) -> bytes:
        """The state as ``numpy.savez`` bytes (the changelog value)."""
        meta = np.array([math.nan if self.start is None else self.start, self.seen.added, self.seen.rotations, self.new_identities,
                         self.floods, self.groups.evicted], dtype=np.float64)
        arrays: dict[str, npt.NDArray[np.generic]] = {"meta": meta, "current": self.seen.current, "previous": self.seen.previous,
                                                     **{f"groups.{k}": v for k, v in self.groups.arrays().items()}}
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    def restore(self, blob: bytes) -> None:
        """Load what ``export`` wrote (replaces the current state); filters of another size start empty."""
        if not blob:
            return
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = arrays["meta"]
        self.start = None if math.isnan(meta[0]) else float(meta[0])
        if arrays["current"].shape == self.seen.current.shape:
            self.seen.current, self.seen.previous = arrays["current"].astype(np.uint64), arrays["previous"].astype(np.uint64)
            self.seen.added, self.seen.rotations = int(meta[1]), int(meta[2])
        self.new_identities, self.floods = int(meta[3]), int(meta[4])
        self.groups.load({k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("groups.")})
        self.groups.evicted = int(meta[5])
