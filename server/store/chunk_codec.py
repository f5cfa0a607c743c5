"""The byte format of one chunk: the points of one series over consecutive steps, and their rollups.

Points (`encode_points` / `decode_points`): four columns, each turned into small unsigned integers, stored as
byte planes (server/store/byte_planes.py: each plane constant, bit-packed or zstd, whichever is smallest):

* step, epoch (-1 = "no epoch") — deltas after the first value, minus the smallest of them (frame of reference:
  a series logged every k steps is one constant plane);
* wall_time — when every wall time of the chunk is a whole number of milliseconds (the Monitor sends them so,
  as MLflow stores them), the deltas of those milliseconds as integers (≈ 0.6 bytes a point for a step every
  ~50 ms with jitter); else the wrapping deltas of the float64 bit patterns (exact for any value; ≈ 2 bytes a
  point for time.time() at its 0.24 µs resolution);
* value — float32 bits when every value of the chunk converts to float32 and back bit for bit (losses computed in
  float32: half the bytes), else float64 bits. NaN payloads, ±inf, -0.0 and denormals come back bit for bit.

Each column's first value and smallest delta are varints before the columns, and a CRC-32 of the blob (point count
and flags included) sits in the header, so a damaged blob is refused rather than decoded into wrong points. Format 1
(one zstd frame of the byte-shuffled columns: zigzagged delta-of-delta steps, deltas of epochs and wall times, first
values included) is still read; a chunk is rewritten in format 2 when ingest or retention touches it.

Rollups (`encode_rollups` / `decode_rollups`): for every bucket width 4^k ≥ 256 at which the chunk's points fall
into at least two buckets and where a bucket holds 16 points on average (so the rollups cost at most 1/16 of the
points), one record per aligned bucket (`step >> level`): count, NaN count, min and max over the non-NaN values
(NaN when all are NaN), and the step and value of its last point. Buckets at a chunk's edges hold only the chunk's
part; merging records of one bucket from several chunks is order-independent (`merge_buckets`).

A blob that does not parse raises CorruptChunk naming what is wrong (never a silent wrong answer).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from sqd.server.store.byte_planes import ColumnReader, compress, decompress, encode_column

FORMAT = 2  # format 1 is still decoded
ROLLUP_MIN_LEVEL = 8  # 4^4 = 256 steps: finer buckets are computed from the points themselves
POINTS_PER_ROLLUP = 16  # a level is kept when its buckets hold this many points on average
_HEADER_V1 = struct.Struct("<BBI")  # format, flags, n
_HEADER = struct.Struct("<BBII")  # format, flags, n, CRC-32 of (format, flags, n) and the body
_F32 = 1
_WALL_MS = 2


class CorruptChunk(ValueError):
    """A stored chunk or rollup blob cannot be decoded."""


@dataclass
class Points:
    """Points of one series sorted by step, steps unique. epoch -1 = none."""

    step: np.ndarray  # int64
    value: np.ndarray  # float64
    epoch: np.ndarray  # int64
    wall_time: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.step)

    def take(self, index: np.ndarray | slice) -> Points:
        return Points(self.step[index], self.value[index], self.epoch[index], self.wall_time[index])

    @classmethod
    def concat(cls, parts: list[Points]) -> Points:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("step", "value", "epoch", "wall_time")))

    @classmethod
    def empty(cls) -> Points:
        ints, floats = np.empty(0, np.int64), np.empty(0, np.float64)
        return cls(ints, floats, ints, floats)


def _zigzag(d: int) -> int:
    """A signed 64-bit integer as an unsigned one, small magnitudes small (for varints)."""
    return ((d << 1) ^ (d >> 63)) & 0xFFFFFFFFFFFFFFFF


def _unzigzag(z: np.ndarray) -> np.ndarray:
    z = z.view(np.uint64)
    return ((z >> np.uint64(1)) ^ (np.uint64(0) - (z & np.uint64(1)))).view(np.int64)


def _delta(a: np.ndarray) -> np.ndarray:
    """Wrapping first differences (first element kept) of 64-bit integers, as uint64."""
    u = a.view(np.uint64)
    d = u.copy()
    d[1:] -= u[:-1]
    return d


def _undelta(d: np.ndarray) -> np.ndarray:
    return np.cumsum(d.view(np.uint64), dtype=np.uint64).view(np.int64)


def _unshuffle(raw: memoryview | bytes, n: int, dtype: type) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    return np.frombuffer(raw, np.uint8, n * size).reshape(size, n).T.copy().view(dtype).reshape(n)


def _as_float32(values: np.ndarray) -> np.ndarray | None:
    """The values as float32 when that is lossless bit for bit, else None."""
    with np.errstate(over="ignore", invalid="ignore"):
        f32 = values.astype(np.float32)
    if np.array_equal(f32.astype(np.float64).view(np.int64), values.view(np.int64)):
        return f32
    return None


def _as_milliseconds(wall: np.ndarray) -> np.ndarray | None:
    """The wall times as integer milliseconds when that is lossless bit for bit, else None."""
    ms = np.rint(wall * 1000.0)
    if not np.all(np.abs(ms) < 2.0**53):  # also false for NaN / ±inf
        return None
    ms_int = ms.astype(np.int64)
    return ms_int if np.array_equal((ms_int / 1000.0).view(np.int64), wall.view(np.int64)) else None


def varint(z: int) -> bytes:
    out = bytearray()
    while z >= 0x80:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def read_varints(body: memoryview, count: int) -> tuple[list[int], int]:
    """`count` varints from the start of `body`, and the offset after them."""
    out, at = [], 0
    for _ in range(count):
        z, shift = 0, 0
        while True:
            if at >= len(body) or shift > 63:
                raise CorruptChunk("chunk points: a first value is cut short")
            byte = body[at]
            at += 1
            z |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if z >= 2**64:
            raise CorruptChunk("chunk points: a first value exceeds 64 bits")
        out.append(z)
    return out, at


def encode_axes(step: np.ndarray, epoch: np.ndarray, wall_time: np.ndarray) -> tuple[bytes, bool]:
    """The step, epoch and wall_time columns of points (first values and smallest deltas as varints, then three
    columns of byte planes), and whether the wall times went as integer milliseconds."""
    wall = wall_time.astype(np.float64, copy=False)
    ms = _as_milliseconds(wall)
    head, columns = [], []
    for column in (step.astype(np.int64), epoch.astype(np.int64), wall.view(np.int64) if ms is None else ms):
        d = _delta(column)
        # frame of reference: the deltas after the first, minus their smallest, are all ≥ 0 and small
        lo = d[1:].view(np.int64).min() if len(d) > 1 else np.int64(0)
        head += [varint(_zigzag(int(d[0].view(np.int64)))), varint(_zigzag(int(lo)))]
        columns.append(encode_column(d[1:] - lo.view(np.uint64)))
    return b"".join(head + columns), ms is not None


def encode_values(values: np.ndarray) -> tuple[bytes, bool]:
    """A value column as byte planes, and whether it went as float32 (lossless bit for bit)."""
    f32 = _as_float32(values)
    if f32 is None:
        return encode_column(values.view(np.uint64)), False
    return encode_column(f32.view(np.uint32)), True


def read_axes(body: memoryview, n: int, ms: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """encode_axes' columns of n points from the start of `body`: step, epoch, wall_time and the bytes read.
    Raises ValueError naming what is wrong."""
    heads, at = read_varints(body, 6)
    reader = ColumnReader(body[at:])
    rests = [reader.column(n - 1, np.uint64) for _ in range(3)]
    firsts, los = _unzigzag(np.array(heads[0::2], np.uint64)), _unzigzag(np.array(heads[1::2], np.uint64))
    step, epoch, wall = (_undelta(np.r_[first.view(np.uint64), rest + lo.view(np.uint64)])
                         for first, lo, rest in zip(firsts, los, rests, strict=True))
    return step, epoch, wall / 1000.0 if ms else wall.view(np.float64), at + reader.at


def read_values(reader: ColumnReader, n: int, f32: bool) -> np.ndarray:
    """encode_values' column of n values, as float64."""
    raw = reader.column(n, np.uint32 if f32 else np.uint64)
    return raw.view(np.float32 if f32 else np.float64).astype(np.float64, copy=False)


def encode_points(p: Points) -> bytes:
    axes, ms = encode_axes(p.step, p.epoch, p.wall_time)
    values, f32 = encode_values(p.value)
    body = axes + values
    flags = (_F32 if f32 else 0) | (_WALL_MS if ms else 0)
    crc = zlib.crc32(body, zlib.crc32(_HEADER_V1.pack(FORMAT, flags, len(p))))
    return _HEADER.pack(FORMAT, flags, len(p), crc) + body


def _columns_v1(n: int, flags: int, blob: bytes) -> tuple[np.ndarray, ...]:
    """Format 1: one zstd frame of four byte-shuffled columns, first values included: zigzagged delta-of-delta
    steps, deltas of epochs and wall times, values."""
    try:
        body = memoryview(decompress(blob[_HEADER_V1.size:]))
    except zstandard.ZstdError as exc:
        raise CorruptChunk(f"chunk points: {exc}") from exc
    vsize = 4 if flags & _F32 else 8
    if len(body) != n * (24 + vsize):
        raise CorruptChunk(f"chunk points: {len(body)} bytes for {n} points")
    dod, epoch, wall = (_unzigzag(_unshuffle(body[k * 8 * n:(k + 1) * 8 * n], n, np.uint64)) for k in range(3))
    steps = np.cumsum(np.cumsum(dod))
    return steps, _undelta(epoch), _undelta(wall), _unshuffle(body[24 * n:], n, np.uint32 if vsize == 4 else np.uint64)


def _points_v2(n: int, flags: int, blob: bytes) -> Points:
    _, _, _, crc = _HEADER.unpack_from(blob)
    body = memoryview(blob)[_HEADER.size:]
    # checked before n sizes anything: a damaged count must not allocate (or decode) a wrong number of points
    if zlib.crc32(body, zlib.crc32(memoryview(blob)[:_HEADER_V1.size])) != crc:
        raise CorruptChunk("chunk points: the blob does not match its CRC-32 (damaged)")
    try:
        step, epoch, wall, at = read_axes(body, n, bool(flags & _WALL_MS))
        reader = ColumnReader(body[at:])
        value = read_values(reader, n, bool(flags & _F32))
        reader.finish()
    except ValueError as exc:
        raise CorruptChunk(f"chunk points: {exc}") from exc
    return Points(step, value, epoch, wall)


def decode_points(blob: bytes) -> Points:
    if len(blob) < _HEADER_V1.size:
        raise CorruptChunk(f"chunk points: {len(blob)} bytes is shorter than the header")
    fmt, flags, n = _HEADER_V1.unpack_from(blob)
    if fmt == FORMAT and len(blob) >= _HEADER.size and n:
        return _points_v2(n, flags, blob)
    if fmt != 1:
        raise CorruptChunk(f"chunk points: format {fmt} with {n} points in {len(blob)} bytes is not one this "
                           f"server reads (1 or {FORMAT})")
    steps, epoch, wall_bits, raw = _columns_v1(n, flags, blob)
    wall = wall_bits / 1000.0 if flags & _WALL_MS else wall_bits.view(np.float64)
    value = raw.view(np.float32) if flags & _F32 else raw.view(np.float64)
    return Points(steps, value.astype(np.float64, copy=False), epoch, wall)


@dataclass
class Buckets:
    """Aggregates per aligned bucket (`bucket` = step >> level), sorted by bucket. vmin/vmax are over the non-NaN
    values (NaN when all are NaN); `last_*` is the point at the largest step."""

    bucket: np.ndarray
    n: np.ndarray
    n_nan: np.ndarray
    vmin: np.ndarray
    vmax: np.ndarray
    last_step: np.ndarray
    last_value: np.ndarray

    FIELDS = ("bucket", "n", "n_nan", "vmin", "vmax", "last_step", "last_value")

    def __len__(self) -> int:
        return len(self.bucket)

    def take(self, index: np.ndarray) -> Buckets:
        return Buckets(*(getattr(self, f)[index] for f in self.FIELDS))

    @classmethod
    def concat(cls, parts: list[Buckets]) -> Buckets:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.FIELDS))


def bucketize(step: np.ndarray, value: np.ndarray, level: int) -> Buckets:
    """Aggregate points sorted by step into buckets of 2^level steps."""
    bucket = step >> level
    if not len(step):
        e = np.empty(0, np.int64)
        return Buckets(e, e, e, np.empty(0), np.empty(0), e, np.empty(0))
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(step)] - 1
    nan = np.isnan(value)
    n_nan = np.add.reduceat(nan.astype(np.int64), starts)
    n = ends - starts + 1
    all_nan = n_nan == n
    vmin = np.minimum.reduceat(np.where(nan, np.inf, value), starts)
    vmax = np.maximum.reduceat(np.where(nan, -np.inf, value), starts)
    vmin[all_nan] = vmax[all_nan] = np.nan
    return Buckets(bucket[starts], n, n_nan, vmin, vmax, step[ends], value[ends])


def merge_buckets(b: Buckets, shift: int) -> Buckets:
    """Combine entries (one bucket possibly split over several entries, in any order) into buckets `shift`
    levels coarser: counts add, min/max skip NaN, last follows the largest step."""
    if not len(b):
        return b
    return _coarsen(b.take(np.lexsort((b.last_step, b.bucket >> shift))), shift)


def _coarsen(b: Buckets, shift: int) -> Buckets:
    """merge_buckets for entries already sorted by (bucket >> shift, last_step)."""
    bucket = b.bucket >> shift
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(bucket)] - 1
    with np.errstate(invalid="ignore"):
        vmin = np.fmin.reduceat(b.vmin, starts)
        vmax = np.fmax.reduceat(b.vmax, starts)
    return Buckets(bucket[starts], np.add.reduceat(b.n, starts), np.add.reduceat(b.n_nan, starts), vmin, vmax,
                   b.last_step[ends], b.last_value[ends])


def _rollup_tables(p: Points) -> list[tuple[int, Buckets]]:
    """(level, buckets) for the levels a chunk keeps: each level from the one below, not from the points."""
    n = len(p)
    level, b = ROLLUP_MIN_LEVEL, bucketize(p.step, p.value, ROLLUP_MIN_LEVEL)
    out = []
    while len(b) > 1 and level < 62:
        if len(b) * POINTS_PER_ROLLUP <= n:
            out.append((level, b))
        level, b = level + 2, _coarsen(b, 2)
    return out


def rollup_levels(step: np.ndarray) -> list[int]:
    """The levels a chunk with these (sorted) steps keeps rollups for."""
    return [level for level, _ in _rollup_tables(Points(step, np.zeros(len(step)), step, np.zeros(len(step))))]


ROLLUP_RECORD = np.dtype([("level", "u1"), ("bucket", "<i8"), ("n", "<i4"), ("n_nan", "<i4"), ("vmin", "<f8"),
                          ("vmax", "<f8"), ("last_step", "<i8"), ("last_value", "<f8")])


def encode_rollups(p: Points) -> bytes:
    """Rollups of a chunk's points as zstd-compressed ROLLUP_RECORD rows; empty bytes when no level qualifies.
    Records rather than shuffled columns (10% larger): a query decodes the rollups of many chunks with one
    np.frombuffer over their concatenation."""
    tables = _rollup_tables(p)
    if not tables:
        return b""
    b = Buckets.concat([t for _, t in tables])
    records = np.empty(len(b), ROLLUP_RECORD)
    records["level"] = np.repeat([level for level, _ in tables], [len(t) for _, t in tables])
    for name in Buckets.FIELDS:
        records[name] = getattr(b, name)
    return compress(records.tobytes())


def decode_rollups(blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The ROLLUP_RECORD rows of many chunks' rollups, and for each row the index of the blob it came from."""
    try:
        raw = [decompress(b) if b else b"" for b in blobs]
    except zstandard.ZstdError as exc:
        raise CorruptChunk(f"chunk rollups: {exc}") from exc
    sizes = np.array([len(r) for r in raw], np.int64)
    if np.any(sizes % ROLLUP_RECORD.itemsize):
        raise CorruptChunk(f"chunk rollups: a blob's size is not a multiple of {ROLLUP_RECORD.itemsize} bytes")
    records = np.frombuffer(b"".join(raw), ROLLUP_RECORD)
    return records, np.repeat(np.arange(len(blobs)), sizes // ROLLUP_RECORD.itemsize)


def buckets_of(records: np.ndarray) -> Buckets:
    return Buckets(*(records[name].astype(np.float64 if name in ("vmin", "vmax", "last_value") else np.int64)
                     for name in Buckets.FIELDS))


def chunk_row(series_id: int, p: Points) -> dict[str, Any]:
    """The `chunks` row (models.Chunk) holding points `p` (sorted, unique) at full resolution."""
    nan = np.isnan(p.value)
    finite = p.value[~nan]
    last = float(p.value[-1])
    return {"series_id": series_id, "first_step": int(p.step[0]), "last_step": int(p.step[-1]),
            "n": len(p), "n_nan": int(nan.sum()),
            "vmin": float(finite.min()) if len(finite) else None, "vmax": float(finite.max()) if len(finite) else None,
            "last_value": None if last != last else last, "width": 1, "rollups": encode_rollups(p),
            "data": encode_points(p)}
