"""Querying the Parquet dataset in place: DuckDB over the current files, local or S3.

The files to read come from the database (`DatasetFile`, current), never from listing the
archive, so an export in progress (planned files) or a replaced version waiting for deletion is
never read twice. Each record type is one view named after it (`demand`, `summation`, `price`)
with the columns of docs/record-format.md ("Parquet") plus `date`, and `demand_minutes` is the
summary of the demand readings per household and minute.

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
from django.db.models import QuerySet

from ingestion import hourfiles
from ingestion.archive.store import open_archive
from ingestion.eagle.record_types import DEMAND, RECORD_TYPES
from ingestion.models import DatasetFile, DatasetFileContent, DatasetFileState
from ingestion.parquet import DEMAND_MINUTES_SCHEMA, arrow_schema

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


def current_files(
    record_type: str,
    start: datetime | None = None,
    end: datetime | None = None,
    content: str = DatasetFileContent.READINGS,
) -> QuerySet[DatasetFile]:
    """The current files of one record type (its readings, or a summary of them) whose hour
    overlaps [start, end)."""
    files = DatasetFile.objects.filter(
        state=DatasetFileState.CURRENT, record_type=record_type, content=content
    )
    if start is not None:
        files = files.filter(dataset_hour__hour__gte=hourfiles.hour_floor(start))
    if end is not None:
        files = files.filter(dataset_hour__hour__lt=end)
    return files


def keys_by_hour(files: QuerySet[DatasetFile]) -> list[str]:
    """The keys of `files`, hour by hour."""
    return list(files.order_by("dataset_hour__hour", "key").values_list("key", flat=True))


@dataclass(frozen=True, slots=True)
class View:
    """A view of `open_dataset`: the current files of one record type's readings or summary."""

    name: str
    record_type: str
    content: str
    schema: pa.Schema
    # The Hive partitions the files are under besides `date`, left out of the view.
    partitions: tuple[str, ...]

    @classmethod
    def of_readings(cls, record_type: str) -> View:
        return cls(
            record_type,
            record_type,
            DatasetFileContent.READINGS,
            arrow_schema(record_type),
            ("record_type",),
        )


DEMAND_MINUTES_VIEW = View(
    DatasetFileContent.DEMAND_MINUTES.value,
    DEMAND,
    DatasetFileContent.DEMAND_MINUTES,
    DEMAND_MINUTES_SCHEMA,
    (),
)


def views(names: Iterable[str] | None = None) -> list[View]:
    """The views named (all by default): each record type's, then `demand_minutes`."""
    every = [View.of_readings(record_type) for record_type in sorted(RECORD_TYPES)]
    every.append(DEMAND_MINUTES_VIEW)
    return [view for view in every if names is None or view.name in names]


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
    view_names: Iterable[str] | None = None,
) -> Dataset:
    """The dataset as DuckDB views (`views`), limited to the hours overlapping [start, end) if
    given."""
    archive = open_archive()
    filesystem, root = archive.arrow_filesystem()
    local = isinstance(filesystem, pa.fs.LocalFileSystem)
    connection = connect()
    files = {}
    for view in views(view_names):
        name = view.name
        keys = keys_by_hour(current_files(view.record_type, start, end, view.content))
        files[name] = len(keys)
        schema = view.schema.append(pa.field("date", pa.date32()))
        if not keys:
            connection.register(f"{name}_empty", schema.empty_table())
            connection.execute(f'CREATE TEMP VIEW "{name}" AS SELECT * FROM {name}_empty')
        elif local:
            # A view cannot take parameters: the file list is a quoted SQL literal.
            files_sql = ", ".join(_sql_string(f"{root}/{key}") for key in keys)
            exclude = f"EXCLUDE ({', '.join(view.partitions)}) " if view.partitions else ""
            types = {partition: "VARCHAR" for partition in view.partitions} | {"date": "DATE"}
            hive_types = ", ".join(f"'{column}': {kind}" for column, kind in types.items())
            connection.execute(
                f'CREATE TEMP VIEW "{name}" AS SELECT * {exclude}FROM '
                f"read_parquet([{files_sql}], hive_partitioning = true, "
                f"hive_types = {{{hive_types}}})"
            )
        else:
            partition_fields = [(p, pa.string()) for p in view.partitions] + [("date", pa.date32())]
            dataset = ds.dataset(
                [f"{root}/{key}" for key in keys],
                schema=schema,
                format="parquet",
                filesystem=filesystem,
                partitioning=ds.partitioning(pa.schema(partition_fields), flavor="hive"),
                partition_base_dir=f"{root}/{_partition_base(keys[0], view)}",
            )
            connection.register(f"{name}_files", dataset)
            connection.execute(f'CREATE TEMP VIEW "{name}" AS SELECT * FROM {name}_files')
    return Dataset(connection, files)


def household_rows(record_type: str, cloud_id: str, start: datetime, end: datetime) -> pa.Table:
    """One household's rows of one record type with meter_time in [start, end), in meter-time
    order, with the columns of the record type's files."""
    schema = arrow_schema(record_type)
    keys = keys_by_hour(current_files(record_type, start, end))
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


def _partition_base(key: str, view: View) -> str:
    """The directory of `key` above its Hive partitions."""
    first = (*view.partitions, "date")[0]
    return key.split(f"/{first}=", 1)[0]


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
# and `time_bucket` on a TIMESTAMPTZ (which goes through the calendar). A household's mean in a
# bucket is its sum over its count, which the readings column reuses (one aggregate state fewer
# per group than `avg` beside `count`), taken either from its readings or from its minutes in the
# demand summary: the same mean from a sixth of the rows at a 10-second cadence, as a minute lies
# in one bucket when the interval is whole minutes.
FLEET_DEMAND_SQL = """
WITH households AS (
    SELECT
        epoch_us({time}) // $step_us AS bucket,
        cloud_id,
        {kw_sum} / {readings} AS kw,
        {readings} AS readings
    FROM {relation}
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
FROM_READINGS = {
    "relation": "demand",
    "time": "meter_time",
    "kw_sum": "sum(demand_kw)",
    "readings": "count(demand_kw)",
}
FROM_MINUTES = {
    "relation": DEMAND_MINUTES_VIEW.name,
    "time": "minute",
    "kw_sum": "sum(demand_kw_sum)",
    "readings": "sum(readings)",
}
WITHIN_RANGE_SQL = "WHERE {time} >= to_timestamp($start) AND {time} < to_timestamp($end)"
MINUTE = timedelta(minutes=1)


def fleet_demand(start: datetime, end: datetime, interval: timedelta) -> list[FleetBucket]:
    """Fleet demand per interval of [start, end) aligned on multiples of `interval` since the
    Unix epoch (UTC days for 1 d), from the dataset: households reporting, the mean and
    percentiles of their mean demands, and their total (the fleet's demand). Intervals without
    readings are left out. From the demand summary where it gives the answer, else from the
    readings."""
    from_minutes = summary_answers(start, end, interval)
    view = DEMAND_MINUTES_VIEW.name if from_minutes else DEMAND
    with open_dataset(start, end, [view]) as dataset:
        return fleet_demand_of(dataset, start, end, interval, from_minutes)


def summary_answers(start: datetime, end: datetime, interval: timedelta) -> bool:
    """Whether `fleet_demand` over [start, end) by `interval` can come from the demand summary:
    all three are whole minutes, and every hour of the range with demand readings has its
    summary (hours exported before the summary existed have none until exported again)."""
    if interval % MINUTE or any(moment.second or moment.microsecond for moment in (start, end)):
        return False
    summarised = current_files(DEMAND, start, end, DatasetFileContent.DEMAND_MINUTES)
    readings = current_files(DEMAND, start, end)
    return not readings.exclude(dataset_hour__in=summarised.values("dataset_hour")).exists()


def fleet_demand_of(
    dataset: Dataset,
    start: datetime,
    end: datetime,
    interval: timedelta,
    from_minutes: bool = False,
) -> list[FleetBucket]:
    """`fleet_demand` over the `demand` relation of `dataset` (or its `demand_minutes`), which
    holds the readings of the hours overlapping [start, end) and no others."""
    step_us = round(interval.total_seconds() * 1_000_000)
    parameters: dict[str, Any] = {"step_us": step_us, "quantiles": [p / 100 for p in PERCENTILES]}
    # An hour's files hold only that hour's readings (hour files are cut by meter time) and only
    # the range's hours are in the relation: a range of whole hours needs no filter, which would
    # otherwise be evaluated on every row.
    whole_hours = start == hourfiles.hour_floor(start) and end == hourfiles.hour_floor(end)
    source = FROM_MINUTES if from_minutes else FROM_READINGS
    where = ""
    if not whole_hours:
        parameters.update(start=start.timestamp(), end=end.timestamp())
        where = WITHIN_RANGE_SQL.format(time=source["time"])
    sql = FLEET_DEMAND_SQL.format(where=where, **source)
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
