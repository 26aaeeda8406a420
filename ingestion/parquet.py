"""The Parquet form of the readings: one typed table per record type, written per fleet-hour.

Layout in the archive (Hive partitions, UTC):

    PARQUET_PREFIX/record_type=<type>/date=<YYYY-MM-DD>/hour-<Y-M-D-H>-v<version>-<n>.parquet

One hour of the whole fleet is one or more files per record type (`MAX_ROWS_PER_FILE`), sorted by
cloud_id then meter time, in row groups of `ROW_GROUP_ROWS` rows whose statistics (min/max of
cloud_id and meter_time) let a reader skip every other household. `record_type` and `date` are
partition columns: they are in the path, not in the files. A new version of an hour (a late part
arrived) gets new keys; the export (ingestion/parquet_export.py) publishes it and then deletes the
old version, so the prefix holds one version of each hour.

With each hour's demand readings goes their summary per household and minute (`demand_minutes`),
which fleet aggregates read instead of every reading, under a prefix of its own:

    PARQUET_SUMMARY_PREFIX/demand_minutes/date=<YYYY-MM-DD>/hour-<Y-M-D-H>-v<version>-<n>.parquet

Columns (SCHEMA_VERSION 1, docs/record-format.md "Parquet"): cloud_id string, meter_time
timestamp[s, UTC], received_at timestamp[ms, UTC] (both stored in microseconds), source string, the
record type's value columns (typed from its `value_schema`), format_version int16, raw string (the
reply's fields as JSON).

Lines are decoded with msgspec straight into these columns (ingestion/record_lines.py, shared
with the SQL readings store); `raw` is kept as the exact JSON text
of the line, never parsed and re-serialised.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from typing import Any

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from django.conf import settings

from ingestion import hourfiles
from ingestion.eagle.record_types import DEMAND, RECORD_TYPES
from ingestion.models import DatasetFileContent
from ingestion.record_lines import decode_lines, json_kind

SCHEMA_VERSION = 1
# Readers find the schema version of any file in its key-value metadata.
SCHEMA_VERSION_KEY = b"rainlog.parquet_schema_version"
HOUR_KEY = b"rainlog.hour"
VERSION_KEY = b"rainlog.version"
ROW_GROUP_ROWS = 8_192
# The summary is read whole by fleet aggregates, never one household at a time: large row groups
# (fewer to schedule and decode) make its scan faster.
SUMMARY_ROW_GROUP_ROWS = 65_536
MAX_ROWS_PER_FILE = 2_000_000
# The columns that fleet queries scan (cloud_id, meter_time, the values) are snappy: it
# decompresses several times faster than zstd, which made a day's fleet query spend most of its
# scan decompressing, for 15% more bytes. The others, `raw` above all, are zstd.
SCAN_COMPRESSION = "snappy"
# Timestamps are stored in microseconds, DuckDB's own unit: it reads them as they are instead of
# converting every millisecond value, a third of the cost of reading meter_time.
TIMESTAMP_UNIT = "us"
# A value column is dictionary encoded when its values repeat (demand in watts, prices): DuckDB
# reads small dictionary indices faster than plain doubles, and they take less space. Columns of
# mostly distinct values (meter totals) stay plain, where a dictionary would only add indices.
DICTIONARY_MAX_DISTINCT_SHARE = 0.25
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
CONTENT_TYPE = "application/vnd.apache.parquet"
PARTITION_COLUMNS = ("record_type", "date")

_JSON_TYPES: dict[str, pa.DataType] = {
    "number": pa.float64(),
    "integer": pa.int64(),
    "string": pa.string(),
    "boolean": pa.bool_(),
}
COMMON_COLUMNS = [
    pa.field("cloud_id", pa.string(), nullable=False),
    pa.field("meter_time", pa.timestamp("s", tz="UTC"), nullable=False),
    pa.field("received_at", pa.timestamp("ms", tz="UTC")),
    pa.field("source", pa.string()),
]
TAIL_COLUMNS = [
    pa.field("format_version", pa.int16()),
    pa.field("raw", pa.string()),
]


def _value_type(schema: dict[str, Any]) -> pa.DataType:
    return _JSON_TYPES[json_kind(schema)[0]]


def value_columns(record_type: str) -> list[pa.Field]:
    """The typed value columns of a record type, from its JSON Schema (`value_schema`)."""
    return [
        pa.field(name, _value_type(schema))
        for name, schema in RECORD_TYPES[record_type].value_schema.items()
    ]


def arrow_schema(record_type: str) -> pa.Schema:
    """The columns of one record type's files, in order."""
    return pa.schema([*COMMON_COLUMNS, *value_columns(record_type), *TAIL_COLUMNS])


# Each household's demand per minute of meter time: a fleet aggregate over whole minutes reads
# one row per household-minute (six times fewer than readings every 10 seconds) and groups those,
# for the same numbers (a household's mean over a bucket is its sum over its readings).
DEMAND_MINUTES_SCHEMA = pa.schema(
    [
        pa.field("cloud_id", pa.string(), nullable=False),
        pa.field("minute", pa.timestamp("s", tz="UTC"), nullable=False),
        pa.field("readings", pa.int32(), nullable=False),
        pa.field("demand_kw_sum", pa.float64()),
        pa.field("demand_kw_min", pa.float64()),
        pa.field("demand_kw_max", pa.float64()),
    ]
)


def demand_minutes(demand: pa.Table) -> pa.Table:
    """The summary of a table of demand readings: for each household and minute of meter time
    with readings, how many and the sum, minimum and maximum of their demand; sorted by cloud_id
    then minute."""
    seconds = demand.column("meter_time").cast(pa.int64())
    minutes = pc.multiply(pc.divide(seconds, 60), 60).cast(pa.timestamp("s", tz="UTC"))
    grouped = (
        pa.table(
            {"cloud_id": demand.column("cloud_id"), "minute": minutes, "kw": demand["demand_kw"]}
        )
        .group_by(["cloud_id", "minute"], use_threads=False)
        .aggregate([("kw", "count"), ("kw", "sum"), ("kw", "min"), ("kw", "max")])
        .sort_by([("cloud_id", "ascending"), ("minute", "ascending")])
    )
    columns = ["cloud_id", "minute", "kw_count", "kw_sum", "kw_min", "kw_max"]
    return pa.Table.from_arrays(
        [grouped.column(name) for name in columns], names=DEMAND_MINUTES_SCHEMA.names
    ).cast(DEMAND_MINUTES_SCHEMA)


# --- Keys ---------------------------------------------------------------------------------------


def prefix() -> str:
    return settings.PARQUET_PREFIX


def summary_prefix() -> str:
    return settings.PARQUET_SUMMARY_PREFIX


def partition_prefix(
    record_type: str, hour: datetime, content: str = DatasetFileContent.READINGS
) -> str:
    date = f"date={hourfiles.hour_floor(hour):%Y-%m-%d}"
    if content == DatasetFileContent.READINGS:
        base = f"{prefix()}/" if prefix() else ""
        return f"{base}record_type={record_type}/{date}"
    base = f"{summary_prefix()}/" if summary_prefix() else ""
    return f"{base}{content}/{date}"


def file_key(
    record_type: str,
    hour: datetime,
    version: int,
    index: int,
    content: str = DatasetFileContent.READINGS,
) -> str:
    return (
        f"{partition_prefix(record_type, hour, content)}/"
        f"hour-{hourfiles.hour_label(hour)}-v{version}-{index}.parquet"
    )


# --- Decoding hour files ------------------------------------------------------------------------


@dataclass
class HourColumns:
    """The readings of one fleet-hour, gathered file by file and grouped by record type, then
    built into one table per record type (`build`) with each reading once (by cloud_id and
    meter timestamp; the copy of the earliest file added is kept)."""

    readings: dict[str, list[Any]] = field(default_factory=dict)
    # Non-empty lines read, and those that are no reading (malformed, wrongly typed,
    # incomplete, of an unknown record type); after `build`: rows kept, repeats dropped.
    lines: int = 0
    skipped: int = 0
    rows: int = 0
    duplicates: int = 0
    households: int = 0

    def add_lines(self, data: bytes) -> None:
        """Every line of one hour file (or late part)."""
        readings, others = decode_lines(data)
        self.lines += len(readings) + others
        self.skipped += others
        by_type = self.readings
        for reading in readings:
            kind = reading.record_type
            group = by_type.get(kind)
            if group is None:
                group = by_type[kind] = []
            group.append(reading)

    def build(self) -> list[tuple[str, pa.Table]]:
        """(record type, its table sorted by cloud_id then meter time), types in name order."""
        tables = []
        households: set[str] = set()
        for kind in sorted(self.readings):
            table, repeats = _without_repeats(to_table(kind, self.readings[kind]))
            self.duplicates += repeats
            self.rows += table.num_rows
            households.update(pc.unique(table.column("cloud_id")).to_pylist())
            tables.append((kind, table))
        self.households = len(households)
        return tables


def to_table(record_type: str, readings: list[Any]) -> pa.Table:
    """Decoded readings of one record type as a table in the dataset's columns, sorted."""
    schema = arrow_schema(record_type)
    arrays = []
    for column in schema:
        name = column.name
        if name == "meter_time":
            values = [r.meter_timestamp for r in readings]
            array = pa.array(values, pa.int64()).cast(column.type)
        elif name == "received_at":
            array = pa.array([r.received_at for r in readings], pa.string()).cast(column.type)
        elif name == "raw":
            array = _json_texts([r.raw for r in readings])
        else:
            array = pa.array([getattr(r, name) for r in readings], column.type)
        arrays.append(array)
    fields = [pa.field("raw", pa.large_string()) if f.name == "raw" else f for f in schema]
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    # Files are added household by household, each in time order: usually nothing moves. The
    # sort is stable, so repeats keep the order of the files they came from.
    if _in_order(table):
        return table
    return table.sort_by([("cloud_id", "ascending"), ("meter_time", "ascending")])


def _json_texts(texts: list[msgspec.Raw]) -> pa.Array:
    """JSON texts as one Arrow string column, built from a single joined buffer: ten times
    faster than converting each text. Large offsets, so an hour of any fleet fits; each file
    gets ordinary strings (`hour_objects`)."""
    offsets = array("q", [0])
    offsets.extend(accumulate(map(len, texts)))
    column = pa.LargeStringArray.from_buffers(
        len(texts), pa.py_buffer(offsets), pa.py_buffer(b"".join(texts))
    )
    column.validate(full=True)  # UTF-8, as every Arrow string must be
    return column


def _adjacent_repeats(table: pa.Table) -> pa.Array:
    """For each row but the first: whether it has the cloud_id and meter time of the row before."""
    cloud_ids, times = table.column("cloud_id"), table.column("meter_time")
    last = table.num_rows - 1
    return pc.and_(
        pc.equal(cloud_ids.slice(0, last), cloud_ids.slice(1)),
        pc.equal(times.slice(0, last), times.slice(1)),
    )


def _without_repeats(table: pa.Table) -> tuple[pa.Table, int]:
    """A sorted table without the rows that repeat the reading before them, and their number."""
    if table.num_rows < 2:
        return table, 0
    repeats = _adjacent_repeats(table)
    if not pc.any(repeats).as_py():
        return table, 0
    keep = pa.concat_arrays([pa.array([True]), pc.invert(repeats).combine_chunks()])
    kept = table.filter(keep)
    return kept, table.num_rows - kept.num_rows


def _in_order(table: pa.Table) -> bool:
    if table.num_rows < 2:
        return True
    cloud_ids, times = table.column("cloud_id"), table.column("meter_time")
    before, after = cloud_ids.slice(0, len(cloud_ids) - 1), cloud_ids.slice(1)
    ordered = pc.or_(
        pc.less(before, after),
        pc.and_(
            pc.equal(before, after),
            pc.less_equal(times.slice(0, len(times) - 1), times.slice(1)),
        ),
    )
    return bool(pc.all(ordered).as_py())


# --- Writing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParquetObject:
    """One Parquet file ready to store: its key, bytes, rows and SHA-256."""

    record_type: str
    key: str
    body: bytes
    rows: int
    sha256: str
    content: str = DatasetFileContent.READINGS

    @property
    def size(self) -> int:
        return len(self.body)


def parquet_bytes(
    table: pa.Table,
    metadata: dict[bytes, bytes] | None = None,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> bytes:
    """The table as one Parquet file, in the dataset's encoding (deterministic for a table)."""
    table = table.replace_schema_metadata(
        {SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(), **(metadata or {})}
    )
    zstd_columns = {f.name for f in [*COMMON_COLUMNS, *TAIL_COLUMNS]} - {"cloud_id", "meter_time"}
    codecs = {
        name: COMPRESSION if name in zstd_columns else SCAN_COMPRESSION
        for name in table.column_names
    }
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=row_group_rows,
        compression=codecs,
        compression_level={
            name: COMPRESSION_LEVEL for name, codec in codecs.items() if codec == COMPRESSION
        },
        use_dictionary=_dictionary_columns(table),
        coerce_timestamps=TIMESTAMP_UNIT,
        write_statistics=True,
        sorting_columns=[pq.SortingColumn(0), pq.SortingColumn(1)],
        write_page_index=True,
    )
    return sink.getvalue().to_pybytes()


def _dictionary_columns(table: pa.Table) -> list[str]:
    """cloud_id and source, and the value columns whose values repeat (demand, price, currency)."""
    common = {f.name for f in [*COMMON_COLUMNS, *TAIL_COLUMNS]}
    repeating = [
        name
        for name in table.column_names
        if name not in common
        and pc.count_distinct(table.column(name)).as_py()
        <= DICTIONARY_MAX_DISTINCT_SHARE * table.num_rows
    ]
    return [name for name in ("cloud_id", "source") if name in table.column_names] + repeating


def hour_objects(
    hour: datetime, version: int, tables: Iterable[tuple[str, pa.Table]]
) -> Iterator[ParquetObject]:
    """The files of one version of one fleet-hour: each record type's table, and the summary of
    its demand readings, in slices of at most MAX_ROWS_PER_FILE rows."""
    metadata = {HOUR_KEY: hourfiles.hour_label(hour).encode(), VERSION_KEY: str(version).encode()}
    for record_type, table in tables:
        files = [(DatasetFileContent.READINGS, table, arrow_schema(record_type), ROW_GROUP_ROWS)]
        if record_type == DEMAND:
            summary = demand_minutes(table)
            files.append(
                (DatasetFileContent.DEMAND_MINUTES, summary, summary.schema, SUMMARY_ROW_GROUP_ROWS)
            )
        for content, rows, schema, row_group_rows in files:
            for index, offset in enumerate(range(0, max(rows.num_rows, 1), MAX_ROWS_PER_FILE)):
                piece = rows.slice(offset, MAX_ROWS_PER_FILE).cast(schema)
                body = parquet_bytes(piece, metadata, row_group_rows)
                yield ParquetObject(
                    record_type,
                    file_key(record_type, hour, version, index, content),
                    body,
                    piece.num_rows,
                    hashlib.sha256(body).hexdigest(),
                    content,
                )


def rows_in(body: bytes) -> int:
    """The number of rows a Parquet file's footer declares."""
    return int(pq.read_metadata(pa.BufferReader(body)).num_rows)


def rows_in_file(filesystem: pa.fs.FileSystem, path: str) -> int:
    """The rows a stored Parquet file's footer declares (only the footer is read)."""
    return int(pq.read_metadata(path, filesystem=filesystem).num_rows)


def summarised_readings(filesystem: pa.fs.FileSystem, path: str) -> int:
    """The readings a stored demand summary counts (only its `readings` column is read)."""
    counts = pq.read_table(path, columns=["readings"], filesystem=filesystem).column("readings")
    return int(pc.sum(counts).as_py() or 0)


def readings_schema() -> pa.Schema:
    """The columns of a table of readings of any record types: `record_type`, then the dataset's
    columns with every registered record type's value columns (null where a record has none)."""
    fields = [pa.field("record_type", pa.string()), *COMMON_COLUMNS]
    for record_type in sorted(RECORD_TYPES):
        known = {f.name for f in fields}
        fields += [f for f in value_columns(record_type) if f.name not in known]
    return pa.schema([*fields, *TAIL_COLUMNS])


def readings_table_of(tables: Iterable[tuple[str, pa.Table]]) -> pa.Table:
    """Tables of readings, each of one record type in that type's columns (as `HourColumns.build`
    and the dataset's files have them), as one table in `readings_schema`, in meter-time order."""
    schema = readings_schema()
    parts = []
    for record_type, table in tables:
        rows = table.num_rows
        arrays = [
            pa.array([record_type] * rows, pa.string())
            if f.name == "record_type"
            else table.column(f.name).cast(f.type)
            if f.name in table.column_names
            else pa.nulls(rows, f.type)
            for f in schema
        ]
        parts.append(pa.Table.from_arrays(arrays, schema=schema))
    if not parts:
        return schema.empty_table()
    table = pa.concat_tables(parts)
    return table.sort_by([("meter_time", "ascending"), ("record_type", "ascending")])


def typed_tables(records: Iterable[dict[str, Any]]) -> list[tuple[str, pa.Table]]:
    """Records of any record types as one table per record type in that type's columns, each
    reading once, as `HourColumns.build` makes them."""
    columns = HourColumns()
    columns.add_lines(b"".join(orjson.dumps(record) + b"\n" for record in records))
    return columns.build()


def readings_table(records: Iterable[dict[str, Any]]) -> pa.Table:
    """Records of any record types as one table in `readings_schema`, in meter-time order, typed
    as in the dataset's files."""
    return readings_table_of(typed_tables(records))
