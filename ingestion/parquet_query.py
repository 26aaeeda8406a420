"""Querying the Parquet dataset in place: DuckDB over the current files, local or S3.

The files to read come from the database (`DatasetFile`, current), never from listing the
archive, so an export in progress (planned files) or a replaced version waiting for deletion is
never read twice. Each record type is one view named after it (`demand`, `summation`, `price`)
with the columns of docs/record-format.md ("Parquet") plus `date`.

- Local archive: DuckDB reads the files itself (`read_parquet`), in parallel, with row-group
  pruning on the statistics.
- S3: DuckDB scans a pyarrow dataset over pyarrow's own S3 file system (the archive's
  credentials and endpoint), which reads only the byte ranges of the columns and row groups
  asked for. No DuckDB extension is installed or loaded from the network.

One household's rows (`household_rows`) skip DuckDB: a view over a day's files costs more to
build than the read itself, so pyarrow reads the files directly, keeping only the row groups
whose cloud_id statistics can hold the household.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ingestion import hourfiles
from ingestion.archive.store import open_archive
from ingestion.eagle.record_types import DEMAND, RECORD_TYPES
from ingestion.models import DatasetFile, DatasetFileState
from ingestion.parquet import arrow_schema

# DuckDB may use every core, and no more memory than this, whatever the query.
MEMORY_LIMIT = "2GB"
# How DuckDB reads the local files (S3 goes through pyarrow, which these do not concern), each
# worth 5 to 10% of a day's fleet query: footers are kept between queries (a key is never
# rewritten, and DuckDB bounds the cache by memory, least recently used first), and prefetching
# and the external file cache, meant for remote files, are off, as they only cost CPU on a local
# disk.
LOCAL_PARQUET_SETTINGS = {
    "parquet_metadata_cache": "true",
    "disable_parquet_prefetching": "true",
    "enable_external_file_cache": "false",
}


class QueryError(Exception):
    """A query DuckDB refused (syntax, unknown column, …), with its message."""


def current_keys(
    record_type: str, start: datetime | None = None, end: datetime | None = None
) -> list[str]:
    """Keys of the current files of one record type whose hour overlaps [start, end)."""
    files = DatasetFile.objects.filter(state=DatasetFileState.CURRENT, record_type=record_type)
    if start is not None:
        files = files.filter(dataset_hour__hour__gte=hourfiles.hour_floor(start))
    if end is not None:
        files = files.filter(dataset_hour__hour__lt=end)
    return list(files.order_by("dataset_hour__hour", "key").values_list("key", flat=True))


_database: duckdb.DuckDBPyConnection | None = None
_database_lock = threading.Lock()


def connect() -> duckdb.DuckDBPyConnection:
    """A connection to this process's in-memory DuckDB, which fetches nothing from the network
    (no extension downloads). Opening the database costs about 0.1 s, a connection to it well
    under 1 ms: one database per process, one connection per query; views made on a
    connection are its own (TEMP)."""
    global _database
    with _database_lock:
        if _database is None:
            _database = duckdb.connect(
                config={
                    "autoinstall_known_extensions": False,
                    "autoload_known_extensions": False,
                    "memory_limit": MEMORY_LIMIT,
                }
            )
            # Parquet's settings exist once its (built-in) extension is loaded, after connecting.
            for name, value in LOCAL_PARQUET_SETTINGS.items():
                _database.execute(f"SET GLOBAL {name} = {value}")
        return _database.cursor()


@dataclass
class Dataset:
    """A DuckDB connection with one view per record type over the current Parquet files."""

    connection: duckdb.DuckDBPyConnection
    files: dict[str, int]

    def execute(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> duckdb.DuckDBPyRelation:
        try:
            return self.connection.sql(sql, params=parameters)
        except duckdb.Error as exc:
            raise QueryError(str(exc).strip()) from None

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_dataset(
    start: datetime | None = None,
    end: datetime | None = None,
    record_types: Iterable[str] | None = None,
) -> Dataset:
    """The dataset as DuckDB views, limited to the hours overlapping [start, end) if given."""
    archive = open_archive()
    filesystem, root = archive.arrow_filesystem()
    local = isinstance(filesystem, pa.fs.LocalFileSystem)
    connection = connect()
    files = {}
    for record_type in record_types or sorted(RECORD_TYPES):
        keys = current_keys(record_type, start, end)
        files[record_type] = len(keys)
        schema = _schema_with_date(record_type)
        if not keys:
            connection.register(f"{record_type}_empty", schema.empty_table())
            connection.execute(
                f'CREATE TEMP VIEW "{record_type}" AS SELECT * FROM {record_type}_empty'
            )
        elif local:
            # A view cannot take parameters: the file list is a quoted SQL literal.
            files_sql = ", ".join(_sql_string(f"{root}/{key}") for key in keys)
            connection.execute(
                f'CREATE TEMP VIEW "{record_type}" AS SELECT * EXCLUDE (record_type) FROM '
                f"read_parquet([{files_sql}], hive_partitioning = true, "
                "hive_types = {'record_type': VARCHAR, 'date': DATE})"
            )
        else:
            dataset = ds.dataset(
                [f"{root}/{key}" for key in keys],
                schema=schema,
                format="parquet",
                filesystem=filesystem,
                partitioning=ds.partitioning(
                    pa.schema([("record_type", pa.string()), ("date", pa.date32())]),
                    flavor="hive",
                ),
                partition_base_dir=f"{root}/{_prefix_of(keys[0])}",
            )
            connection.register(f"{record_type}_files", dataset)
            connection.execute(
                f'CREATE TEMP VIEW "{record_type}" AS SELECT * FROM {record_type}_files'
            )
    return Dataset(connection, files)


def household_rows(record_type: str, cloud_id: str, start: datetime, end: datetime) -> pa.Table:
    """One household's rows of one record type with meter_time in [start, end), in meter-time
    order, with the columns of the record type's files."""
    schema = arrow_schema(record_type)
    keys = current_keys(record_type, start, end)
    if not keys:
        return schema.empty_table()
    filesystem, root = open_archive().arrow_filesystem()
    if isinstance(filesystem, pa.fs.LocalFileSystem):
        fragments = [_local_fragment(f"{root}/{key}") for key in keys]
        dataset = ds.FileSystemDataset(fragments, schema, _PARQUET, filesystem)
    else:
        dataset = ds.dataset(
            [f"{root}/{key}" for key in keys], schema=schema, format=_PARQUET, filesystem=filesystem
        )
    # Only cloud_id is pushed down: each row group spans its file's hour, so meter_time
    # statistics prune nothing, and filtering the household's few rows afterwards is cheaper.
    table = dataset.to_table(filter=ds.field("cloud_id") == cloud_id)
    meter_time = table.column("meter_time")
    within = pc.and_(
        pc.greater_equal(meter_time, pa.scalar(start)), pc.less(meter_time, pa.scalar(end))
    )
    if not pc.all(within).as_py():
        table = table.filter(within)
    # Files are listed hour by hour and each is sorted: already in order unless hours overlap.
    times = table.column("meter_time")
    if (
        table.num_rows > 1
        and not pc.all(pc.less_equal(times.slice(0, table.num_rows - 1), times.slice(1))).as_py()
    ):
        table = table.sort_by("meter_time")
    return table


_PARQUET = ds.ParquetFileFormat()
_LOCAL = pa.fs.LocalFileSystem()


@functools.lru_cache(maxsize=256)
def _local_fragment(path: str) -> ds.ParquetFileFragment:
    """A local dataset file with its footer read, kept: a file is never rewritten (create-only,
    a new version is a new key), and its footer costs as much to read as its household's rows.
    Local only, as a fragment keeps the file system it was opened with."""
    fragment = _PARQUET.make_fragment(path, _LOCAL)
    fragment.ensure_complete_metadata()
    return fragment


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _schema_with_date(record_type: str) -> pa.Schema:
    return arrow_schema(record_type).append(pa.field("date", pa.date32()))


def _prefix_of(key: str) -> str:
    return key.split("/record_type=", 1)[0]


# --- Fleet aggregates ---------------------------------------------------------------------------

PERCENTILES = (5, 25, 50, 75, 95)


@dataclass(frozen=True, slots=True)
class FleetBucket:
    """Fleet demand in one interval: each household's mean demand there, then across them."""

    start: datetime
    households: int
    mean_kw: float
    total_kw: float
    percentiles_kw: dict[int, float]
    readings: int


# Buckets are whole multiples of the interval in microseconds since the epoch: integer arithmetic
# on the timestamps' own representation, several times cheaper per row than `epoch()` (a double)
# and `time_bucket` on a TIMESTAMPTZ (which goes through the calendar). A household's mean is its
# sum over its count, which the readings column reuses: one aggregate state fewer per group than
# `avg` beside `count`.
FLEET_DEMAND_SQL = """
WITH households AS (
    SELECT
        epoch_us(meter_time) // $step_us AS bucket,
        cloud_id,
        sum(demand_kw) / count(demand_kw) AS kw,
        count(demand_kw) AS readings
    FROM demand
    {where}
    GROUP BY ALL
)
SELECT
    bucket,
    count(*) AS households,
    avg(kw) AS mean_kw,
    sum(kw) AS total_kw,
    quantile_cont(kw, $quantiles) AS percentiles,
    sum(readings) AS readings
FROM households
GROUP BY bucket
ORDER BY bucket
"""
WITHIN_RANGE_SQL = "WHERE meter_time >= to_timestamp($start) AND meter_time < to_timestamp($end)"


def fleet_demand(start: datetime, end: datetime, interval: timedelta) -> list[FleetBucket]:
    """Fleet demand per interval of [start, end) aligned on multiples of `interval` since the
    Unix epoch (UTC days for 1 d), from the dataset: households reporting, the mean and
    percentiles of their mean demands, and their total (the fleet's demand). Intervals without
    readings are left out."""
    with open_dataset(start, end, [DEMAND]) as dataset:
        return fleet_demand_of(dataset, start, end, interval)


def fleet_demand_of(
    dataset: Dataset, start: datetime, end: datetime, interval: timedelta
) -> list[FleetBucket]:
    """`fleet_demand` over the `demand` relation of `dataset`, which holds the readings of the
    hours overlapping [start, end) and no others."""
    step_us = round(interval.total_seconds() * 1_000_000)
    parameters: dict[str, Any] = {"step_us": step_us, "quantiles": [p / 100 for p in PERCENTILES]}
    # An hour's files hold only that hour's readings (hour files are cut by meter time) and only
    # the range's hours are in `demand`: a range of whole hours needs no filter, which would
    # otherwise be evaluated on every row.
    whole_hours = start == hourfiles.hour_floor(start) and end == hourfiles.hour_floor(end)
    if not whole_hours:
        parameters.update(start=start.timestamp(), end=end.timestamp())
    sql = FLEET_DEMAND_SQL.format(where="" if whole_hours else WITHIN_RANGE_SQL)
    rows = dataset.execute(sql, parameters).fetchall()
    return [
        FleetBucket(
            start=datetime.fromtimestamp(bucket * step_us / 1_000_000, start.tzinfo),
            households=households,
            mean_kw=mean,
            total_kw=total,
            percentiles_kw=dict(zip(PERCENTILES, percentiles, strict=True)),
            readings=readings,
        )
        for bucket, households, mean, total, percentiles, readings in rows
    ]
