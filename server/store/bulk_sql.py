"""Dialect-specific bulk writes of numpy columns: SQLite multi-row INSERTs through `executemany` (a C loop),
PostgreSQL binary COPY built with numpy (psycopg's per-value adaptation would cost more than the database's own
work).

Rollups are merged with one upsert whose SET clause is shared by both dialects: counts add, min/max combine with the
NULL (all-NaN) side losing, and `last` follows the larger step — so merging is order-independent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection

PG_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
PG_TYPES = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float8": ">f8"}
SQLITE_ROWS_PER_INSERT = 100  # × at most 9 columns: well under SQLite's 32,766 bound parameters per statement


@dataclass
class Column:
    name: str
    values: np.ndarray
    pg_type: str  # int2 | int4 | int8 | float8 (must match the column type exactly)
    null: np.ndarray | None = None  # True where the value is NULL

    def python(self) -> list[object]:
        """Values as Python objects with None for NULL (for SQLite's executemany)."""
        out: list[object] = self.values.tolist()
        if self.null is not None:
            for i in np.flatnonzero(self.null).tolist():
                out[i] = None
        return out


def pg_copy_binary(columns: list[Column]) -> bytes:
    """The body of `COPY ... FROM STDIN (FORMAT BINARY)` for these columns. Rows are grouped by which of their
    fields are NULL, because a NULL field has no data and so changes the row's fixed layout."""
    n = len(columns[0].values)
    pattern = np.zeros(n, dtype=np.int64)
    for bit, col in enumerate(columns):
        if col.null is not None:
            pattern |= col.null.astype(np.int64) << bit
    chunks = [PG_BINARY_HEADER]
    for p in np.unique(pattern).tolist():
        rows = np.flatnonzero(pattern == p)
        fields: list[tuple[str, str]] = [("nfields", ">i2")]
        for i, col in enumerate(columns):
            fields.append((f"len{i}", ">i4"))
            if not (p >> i) & 1:
                fields.append((f"v{i}", PG_TYPES[col.pg_type]))
        block = np.empty(len(rows), dtype=np.dtype(fields))
        block["nfields"] = len(columns)
        for i, col in enumerate(columns):
            if (p >> i) & 1:
                block[f"len{i}"] = -1
            else:
                block[f"len{i}"] = np.dtype(PG_TYPES[col.pg_type]).itemsize
                block[f"v{i}"] = col.values[rows]
        chunks.append(block.tobytes())
    chunks.append(b"\xff\xff")
    return b"".join(chunks)


def _pg_copy(conn: Connection, table: str, columns: list[Column]) -> None:
    names = ", ".join(c.name for c in columns)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(pg_copy_binary(columns))


def insert_rows(conn: Connection, table: str, columns: list[Column], on_conflict: str = "") -> None:
    """INSERT the rows (PostgreSQL: COPY; only for rows known to be new, since COPY has no ON CONFLICT)."""
    if conn.dialect.name == "postgresql" and not on_conflict:
        _pg_copy(conn, table, columns)
        return
    names = ", ".join(c.name for c in columns)
    row_marks = "(" + ", ".join("?" for _ in columns) + ")"

    def insert(rows: int) -> str:
        return f"INSERT INTO {table} ({names}) VALUES {', '.join([row_marks] * rows)} {on_conflict}"

    width = len(columns)
    flat = [v for row in zip(*(c.python() for c in columns), strict=True) for v in row]
    # SQLite: statements of SQLITE_ROWS_PER_INSERT rows each halve the per-row cost of one-row executemany
    per = SQLITE_ROWS_PER_INSERT * width
    full = len(flat) - len(flat) % per
    if full:
        conn.exec_driver_sql(insert(SQLITE_ROWS_PER_INSERT), [tuple(flat[i:i + per]) for i in range(0, full, per)])
    if full < len(flat):
        conn.exec_driver_sql(insert((len(flat) - full) // width), tuple(flat[full:]))


def rollup_merge_clause(dialect: str) -> str:
    least, greatest = ("least", "greatest") if dialect == "postgresql" else ("min", "max")  # SQLite: scalar min/max
    return (
        "ON CONFLICT (series_id, level, bucket) DO UPDATE SET "
        "n = rollups.n + excluded.n, n_nan = rollups.n_nan + excluded.n_nan, "
        # the NULL side must not win, and SQLite's scalar min() is NULL when any argument is
        f"vmin = {least}(coalesce(rollups.vmin, excluded.vmin), coalesce(excluded.vmin, rollups.vmin)), "
        f"vmax = {greatest}(coalesce(rollups.vmax, excluded.vmax), coalesce(excluded.vmax, rollups.vmax)), "
        "last_value = CASE WHEN excluded.last_step > rollups.last_step THEN excluded.last_value "
        "ELSE rollups.last_value END, "
        f"last_step = {greatest}(rollups.last_step, excluded.last_step)")


def merge_rollups(conn: Connection, columns: list[Column]) -> None:
    clause = rollup_merge_clause(conn.dialect.name)
    if conn.dialect.name != "postgresql":
        insert_rows(conn, "rollups", columns, clause)
        return
    # COPY into a per-transaction staging table, then one set-based upsert
    conn.exec_driver_sql("CREATE TEMP TABLE IF NOT EXISTS rollups_in (LIKE rollups) ON COMMIT DELETE ROWS")
    _pg_copy(conn, "rollups_in", columns)
    names = ", ".join(c.name for c in columns)
    conn.exec_driver_sql(f"INSERT INTO rollups ({names}) SELECT {names} FROM rollups_in {clause}")
    conn.exec_driver_sql("TRUNCATE rollups_in")  # a later batch in the same transaction starts empty
