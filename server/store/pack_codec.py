"""The byte format of a run pack: the whole points of many small series of one run in one blob.

A finished run's short series (evaluations, per-epoch angles, a sweep's 100-step runs) cost more in per-chunk
overhead — a row, its index entry, a header — and in wall times repeated once per key than in their values. A pack
stores them together (server/store/packs.py): series whose step, epoch and wall_time columns are equal (every key
the Monitor sends in one batch shares them) form a group whose axes are encoded once (chunk_codec.encode_axes);
each series of the group then adds only its value column (chunk_codec.encode_values). NaN payloads, ±inf and -0.0
come back bit for bit, as from a chunk.

Layout, after a header of (format, series count, CRC-32 of the body):

    groups (varint)
    per group:   n points (varint), wall-ms flag (byte), axes length (varint), axes,
                 series (varint), per series: series id (varint), float32 flag (byte), length (varint), values

Every length is stored, so reading one series decodes its group's axes and its own values only: `PackIndex`
walks the headers once and decodes a series when asked. A blob that does not parse raises CorruptChunk naming what
is wrong.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from sqd.server.store.byte_planes import ColumnReader
from sqd.server.store.chunk_codec import (
    CorruptChunk,
    Points,
    encode_axes,
    encode_values,
    read_axes,
    read_values,
    read_varints,
    varint,
)

FORMAT = 1
_HEADER = struct.Struct("<BII")  # format, series, CRC-32 of the body


def _axes_key(p: Points) -> tuple[bytes, ...]:
    return tuple(np.ascontiguousarray(a).tobytes() for a in (p.step, p.epoch, p.wall_time.view(np.int64)))


def encode_pack(series: dict[int, Points]) -> bytes:
    """series id → its points (sorted by step, unique, at least one) as one pack."""
    groups: dict[tuple[bytes, ...], list[int]] = {}
    for sid in sorted(series):
        if not len(series[sid]):
            raise ValueError(f"series {sid} has no points to pack")
        groups.setdefault(_axes_key(series[sid]), []).append(sid)
    out = [varint(len(groups))]
    for sids in groups.values():
        first = series[sids[0]]
        axes, ms = encode_axes(first.step, first.epoch, first.wall_time)
        out += [varint(len(first)), bytes([ms]), varint(len(axes)), axes, varint(len(sids))]
        for sid in sids:
            values, f32 = encode_values(series[sid].value)
            out += [varint(sid), bytes([f32]), varint(len(values)), values]
    body = b"".join(out)
    return _HEADER.pack(FORMAT, len(series), zlib.crc32(body)) + body


class _Body(ColumnReader):
    """A cursor over a pack body: varints and byte strings, each read checked against the body's end."""

    def varint(self) -> int:
        (value,), used = read_varints(self._body[self._at:], 1)
        self._at += used
        return value

    def take(self, size: int, what: str) -> memoryview:
        return self._take(size, what)


def pack_series_count(blob: bytes) -> int:
    if len(blob) < _HEADER.size:
        raise CorruptChunk(f"run pack: {len(blob)} bytes is shorter than the header")
    return int(_HEADER.unpack_from(blob)[1])


@dataclass
class _Group:
    n: int
    ms: bool
    axes: memoryview
    decoded: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # step, epoch, wall_time, once read


@dataclass(frozen=True)
class _Entry:
    group: _Group
    f32: bool
    values: memoryview


class PackIndex:
    """A pack read once: its CRC checked and where each series lies found in one pass over the headers; a series'
    points are decoded when asked for (its group's axes once for the group). A reader of many keys of one run (an
    export, a run page) would otherwise skim the whole blob again for each key."""

    def __init__(self, blob: bytes):
        if len(blob) < _HEADER.size:
            raise CorruptChunk(f"run pack: {len(blob)} bytes is shorter than the header")
        fmt, count, crc = _HEADER.unpack_from(blob)
        if fmt != FORMAT:
            raise CorruptChunk(f"run pack: format {fmt} is not one this server reads ({FORMAT})")
        body = memoryview(blob)[_HEADER.size:]
        if zlib.crc32(body) != crc:
            raise CorruptChunk("run pack: the blob does not match its CRC-32 (damaged)")
        self.entries: dict[int, _Entry] = {}
        try:
            cursor = _Body(body)
            for _ in range(cursor.varint()):
                n, ms = cursor.varint(), cursor.take(1, "a wall-ms flag")[0]
                group = _Group(n, bool(ms), cursor.take(cursor.varint(), "a group's axes"))
                for _ in range(cursor.varint()):
                    sid, f32 = cursor.varint(), cursor.take(1, "a float32 flag")[0]
                    self.entries[sid] = _Entry(group, bool(f32), cursor.take(cursor.varint(), f"series {sid}'s values"))
            if cursor.at != len(body) or len(self.entries) != count:
                raise ValueError(f"{len(self.entries)} series and {len(body) - cursor.at} bytes left where the "
                                 f"header says {count}")
        except ValueError as exc:
            raise CorruptChunk(f"run pack: {exc}") from exc

    def __contains__(self, sid: int) -> bool:
        return sid in self.entries

    def points(self, sid: int) -> Points:
        entry = self.entries[sid]
        group = entry.group
        try:
            if group.decoded is None:
                step, epoch, wall, used = read_axes(group.axes, group.n, group.ms)
                if used != len(group.axes):
                    raise ValueError(f"{len(group.axes) - used} bytes after a group's axes")
                group.decoded = step, epoch, wall
            reader = ColumnReader(entry.values)
            value = read_values(reader, group.n, entry.f32)
            reader.finish()
        except ValueError as exc:
            raise CorruptChunk(f"run pack: series {sid}: {exc}") from exc
        step, epoch, wall = group.decoded
        return Points(step, value, epoch, wall)


def decode_pack(blob: bytes, only: Collection[int] | None = None) -> dict[int, Points]:
    """series id → points, for every series of the pack or those in `only` (the others are skipped unread)."""
    index = PackIndex(blob)
    return {sid: index.points(sid) for sid in index.entries if only is None or sid in only}
