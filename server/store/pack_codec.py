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

Every length is stored, so reading one series decodes its group's axes and its own values only. A blob that
does not parse raises CorruptChunk naming what is wrong.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Collection

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


def decode_pack(blob: bytes, only: Collection[int] | None = None) -> dict[int, Points]:
    """series id → points, for every series of the pack or those in `only` (the others are skipped unread)."""
    if len(blob) < _HEADER.size:
        raise CorruptChunk(f"run pack: {len(blob)} bytes is shorter than the header")
    fmt, count, crc = _HEADER.unpack_from(blob)
    if fmt != FORMAT:
        raise CorruptChunk(f"run pack: format {fmt} is not one this server reads ({FORMAT})")
    body = memoryview(blob)[_HEADER.size:]
    if zlib.crc32(body) != crc:
        raise CorruptChunk("run pack: the blob does not match its CRC-32 (damaged)")
    out: dict[int, Points] = {}
    try:
        cursor, seen = _Body(body), 0
        for _ in range(cursor.varint()):
            n, ms = cursor.varint(), cursor.take(1, "a wall-ms flag")[0]
            axes = cursor.take(cursor.varint(), "a group's axes")
            decoded: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
            for _ in range(cursor.varint()):
                sid, f32 = cursor.varint(), cursor.take(1, "a float32 flag")[0]
                values = cursor.take(cursor.varint(), f"series {sid}'s values")
                seen += 1
                if only is not None and sid not in only:
                    continue
                if decoded is None:
                    step, epoch, wall, used = read_axes(axes, n, bool(ms))
                    if used != len(axes):
                        raise ValueError(f"{len(axes) - used} bytes after a group's axes")
                    decoded = step, epoch, wall
                reader = ColumnReader(values)
                value = read_values(reader, n, bool(f32))
                reader.finish()
                out[sid] = Points(decoded[0], value, decoded[1], decoded[2])
        if cursor.at != len(body) or seen != count:
            raise ValueError(f"{seen} series and {len(body) - cursor.at} bytes left where the header says {count}")
    except ValueError as exc:
        raise CorruptChunk(f"run pack: {exc}") from exc
    return out
