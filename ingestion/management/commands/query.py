"""manage.py query "SQL": DuckDB over the Parquet dataset, in place (local archive or S3)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow.csv
import pyarrow.parquet as pq
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion import hourfiles, parquet_query
from ingestion.management.options import time_option

FORMATS = ("table", "csv", "parquet")


class Command(BaseCommand):
    help = (
        "Run one SQL query (DuckDB) over the Parquet dataset and print a table, or write CSV or "
        "Parquet. Each record type is a view named after it: demand, summation, price (columns "
        'in docs/record-format.md, "Parquet", plus date), and demand_minutes is the demand '
        'summary per household and minute. Example: manage.py query "SELECT '
        "cloud_id, avg(demand_kw) FROM demand WHERE date = '2026-03-08' GROUP BY 1\""
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("sql", help="the query")
        parser.add_argument(
            "--since",
            help="read only hours from this time on (YYYY-MM-DD-HH or ISO 8601, UTC unless an "
            "offset is given): fewer files to open; WHERE clauses still apply",
        )
        parser.add_argument("--until", help="read only hours before this time")
        parser.add_argument(
            "--format",
            choices=FORMATS,
            help="table (default on a terminal), csv, or parquet (needs --output); by default "
            "taken from --output's extension",
        )
        parser.add_argument("--output", "-o", type=Path, help="write the result to this file")
        parser.add_argument(
            "--max-rows", type=int, default=100, help="rows a table shows at most (default 100)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        since = time_option("--since", options["since"], hourfiles.parse_utc_time)
        until = time_option("--until", options["until"], hourfiles.parse_utc_time)
        output: Path | None = options["output"]
        fmt = options["format"] or (output.suffix.lstrip(".").lower() if output else "table")
        if fmt not in FORMATS or (fmt == "table" and output is not None):
            raise CommandError("--output: give a .csv or .parquet file (or --format csv/parquet)")
        if fmt == "parquet" and output is None:
            raise CommandError("--format parquet needs --output FILE")
        with parquet_query.open_dataset(since, until) as dataset:
            try:
                result = dataset.execute(options["sql"])
                if result is None:
                    raise CommandError("the statement returns no rows: give a query")
                table = result.to_arrow_table()
            except parquet_query.QueryError as exc:
                raise CommandError(f"the query failed: {exc}") from None
        if fmt == "parquet":
            assert output is not None
            pq.write_table(table, output, compression="zstd")
        elif fmt == "csv" and output is not None:
            pyarrow.csv.write_csv(table, output)
        elif fmt == "csv":
            buffer = io.BytesIO()
            pyarrow.csv.write_csv(table, buffer)
            self.stdout.write(buffer.getvalue().decode(), ending="")
        else:
            self.stdout.write(render_table(table, options["max_rows"]))
        if output is not None:
            self.stderr.write(f"{table.num_rows} rows written to {output}.")


def render_table(table: Any, max_rows: int) -> str:
    """The rows as an aligned text table, at most `max_rows` of them."""
    names = table.column_names
    shown = table.slice(0, max_rows).to_pylist()
    cells = [[_cell(row[name]) for name in names] for row in shown]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(names)]
    lines = [
        "  ".join(name.ljust(width) for name, width in zip(names, widths, strict=True)),
        "  ".join("-" * width for width in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    more = table.num_rows - len(shown)
    lines.append(f"({table.num_rows} rows" + (f", {more} not shown)" if more > 0 else ")"))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
