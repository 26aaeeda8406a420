"""`make bench-rotate`: hourly rotation of a fleet's hour files to S3, against the AWS CLI.

Set-up, in a temporary directory removed at the end:
- moto's S3 server (ThreadedMotoServer) in a process of its own, as S3 would be;
- a fresh bench database (BENCH_DATABASE_URL, default
  postgres://postgres@127.0.0.1:5432/rainlog_bench_rotate), dropped and migrated;
- BENCH_FILES hour files (default 10,000: one closed hour of a 10,000-user fleet) of 600 record
  lines each, made with `Reading(...).to_line()` like the poller's.

Measured in the same run, on the same server and the same files:
1. baseline: `aws s3 cp --recursive` of the hour directory (10 requests in flight, no
   verification) into a bucket of its own, once before and once after the rotation (hard links
   keep the files for it); the baseline is the mean of the two, which cancels a drift in the
   load of this shared machine;
2. `ingestion.archive.rotation.rotate()`: register, then seal each file and ship it with a conditional
   PUT carrying its SHA-256 (verified by the server), record it verified, remove the local copy.
Printed: the times, files/s, client and server CPU per file, the ratio (target <= 1.0), and the
rotation's resident memory at points through the run and its peak, to show that memory does not
grow with the number of files.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.support import configure_django, cpu_seconds, free_port, moto_server, recreate_database

BASE_DIR = Path(__file__).resolve().parent.parent
FILES = int(os.environ.get("BENCH_FILES", "10000"))
LINES_PER_FILE = 600
TARGET_RATIO = 1.0
CLI_BUCKET = "rainlog-bench-cli"
ROTATION_BUCKET = "rainlog-bench-rotate"
DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rainlog_bench_rotate"
)
# Each of the two uploads must finish within this, or the benchmark stops with an error.
STEP_TIMEOUT_SECONDS = 900


def configure(work: Path, endpoint: str) -> None:
    configure_django(
        work,
        DATABASE_URL,
        ARCHIVE_BUCKET=ROTATION_BUCKET,
        AWS_S3_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )


def cloud_id_of(n: int) -> str:
    return f"{0x100000 + n:06x}"


def write_hour_files(hour: datetime) -> int:
    """FILES hour files of LINES_PER_FILE demand readings every 6 s; returns their total bytes."""
    from ingestion import hourfiles
    from ingestion.records import Reading, Source

    directory = hourfiles.hour_dir(hour)
    directory.mkdir(parents=True)
    total = 0
    for n in range(FILES):
        cloud_id = cloud_id_of(n)
        lines = []
        for line in range(LINES_PER_FILE):
            moment = hour + timedelta(seconds=6 * line)
            demand = 300 + (n * 131 + line * 37) % 4200
            lines.append(
                Reading(
                    cloud_id=cloud_id,
                    record_type="demand",
                    meter_timestamp=int(moment.timestamp()),
                    received_at=moment + timedelta(milliseconds=380 + line % 200),
                    source=Source.CLOUD,
                    values={"demand_kw": demand / 1000},
                    raw={
                        "DeviceMacId": f"0xd8d5b9000000{n:04x}",
                        "MeterMacId": f"0x00135003{n:08x}",
                        "TimeStamp": f"0x{int(moment.timestamp()) - 946684800:08x}",
                        "Demand": f"0x{demand:06x}",
                        "Multiplier": "0x00000001",
                        "Divisor": "0x000003e8",
                        "DigitsRight": "0x03",
                        "DigitsLeft": "0x06",
                        "SuppressLeadingZero": "Y",
                    },
                ).to_line()
            )
        data = b"".join(lines)
        hourfiles.local_path(cloud_id, hour).write_bytes(data)
        total += len(data)
    # Durable, as the poller's writer makes its files within seconds (HourFileWriter.sync).
    hourfiles.sync_filesystem(directory)
    return total


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MemoryProbe:
    """A rotation progress listener that samples resident memory at a few points of the run."""

    def __init__(self, files: int) -> None:
        self.points = {files // 10, files // 2, files}
        self.done = 0
        self.samples: list[tuple[int, float]] = []

    def expect(self, more: int) -> None:
        if not self.samples:
            self.samples.append((0, rss_mib()))

    def shipped(self, shipment: object) -> None:
        self.done += 1
        if self.done in self.points:
            self.samples.append((self.done, rss_mib()))


@dataclass(frozen=True)
class Measured:
    seconds: float
    client_cpu: float
    server_cpu: float
    objects: int

    def line(self, label: str) -> str:
        return (
            f"{label:24s} {self.seconds:7.1f} s  {FILES / self.seconds:6.1f} files/s  "
            f"client CPU {self.client_cpu / FILES * 1000:4.1f} ms/file, "
            f"server CPU {self.server_cpu / FILES * 1000:4.1f} ms/file  ({self.objects:,} objects)"
        )


def aws_cli_copy(source: Path, endpoint: str, moto_pid: int, client: Any) -> Measured:
    """The baseline: the CLI copies the hour files into a bucket of its own, emptied after."""
    command = [
        str(Path(sys.executable).with_name("aws")),
        "--endpoint-url", endpoint,
        "s3", "cp", "--recursive", "--quiet",
        str(source), f"s3://{CLI_BUCKET}/rainforest-logs/",
    ]  # fmt: skip
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = cpu_seconds(moto_pid)
    started = time.perf_counter()
    subprocess.run(command, check=True, timeout=STEP_TIMEOUT_SECONDS)
    elapsed = time.perf_counter() - started
    server = cpu_seconds(moto_pid) - server_before
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (children.ru_utime - children_before.ru_utime) + (
        children.ru_stime - children_before.ru_stime
    )
    return Measured(elapsed, cpu, server, empty_bucket(client, CLI_BUCKET))


def empty_bucket(client: Any, bucket: str) -> int:
    """Delete every object of a bucket; returns how many there were.

    Every step empties its bucket after it, so that each upload starts with an empty server:
    moto keeps objects in its own memory, and a fuller server is a slower one.
    """
    objects = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": entry["Key"]} for entry in page.get("Contents", [])]
        objects += len(keys)
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    return objects


def link_copy(source: Path, target: Path) -> None:
    """The same files under a second name each, for the CLI once the rotation removed them."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        os.link(path, target / path.name)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="rainlog-bench-rotate-"))
    hour = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    try:
        with moto_server(free_port(), work / "moto.log") as (endpoint, moto_pid):
            configure(work, endpoint)
            import boto3
            import django

            client = boto3.client("s3", endpoint_url=endpoint)
            for bucket in (CLI_BUCKET, ROTATION_BUCKET):
                client.create_bucket(Bucket=bucket)
            recreate_database(DATABASE_URL)
            django.setup()
            from django.core.management import call_command

            from ingestion import hourfiles
            from ingestion.archive import rotation
            from ingestion.models import HourFile, HourFileState
            from users.models import EagleUser

            call_command("migrate", verbosity=0)
            EagleUser.objects.bulk_create(
                EagleUser(cloud_id=cloud_id_of(n), email=f"bench-{n}@example.org")
                for n in range(FILES)
            )
            print(f"writing {FILES:,} hour files of {LINES_PER_FILE} lines ...", flush=True)
            started = time.perf_counter()
            total_bytes = write_hour_files(hour)
            print(
                f"  {total_bytes / 2**20:,.0f} MiB ({total_bytes / FILES / 1024:.0f} KiB a file) "
                f"in {time.perf_counter() - started:.1f} s"
            )
            cli_source = work / "cli"
            link_copy(hourfiles.hour_dir(hour), cli_source / hourfiles.hour_label(hour))

            # The CLI runs before and after the rotation; their mean is the baseline, so a change
            # in the load of this shared machine during the run weighs on both sides alike.
            print("aws s3 cp --recursive (baseline, unverified), before ...", flush=True)
            cli_before = aws_cli_copy(cli_source, endpoint, moto_pid, client)

            print(
                "rotation (sealed, conditional PUT with SHA-256, recorded, removed) ...", flush=True
            )
            rss_before = rss_mib()
            probe = MemoryProbe(FILES)
            server_before, own_before = cpu_seconds(moto_pid), time.process_time()
            started = time.perf_counter()
            report = rotation.rotate(progress=probe)
            rotated = Measured(
                time.perf_counter() - started,
                time.process_time() - own_before,
                cpu_seconds(moto_pid) - server_before,
                empty_bucket(client, ROTATION_BUCKET),
            )
            verified = HourFile.objects.filter(state=HourFileState.VERIFIED).count()

            print("aws s3 cp --recursive (baseline, unverified), after ...", flush=True)
            cli_after = aws_cli_copy(cli_source, endpoint, moto_pid, client)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    baseline = (cli_before.seconds + cli_after.seconds) / 2
    ratio = rotated.seconds / baseline
    print()
    print(f"files: {FILES:,}, {total_bytes / 2**20:,.0f} MiB")
    print(cli_before.line("aws s3 cp, before:"))
    print(rotated.line("rotation (verified):"))
    print(cli_after.line("aws s3 cp, after:"))
    print(
        f"ratio rotation / cli:  {ratio:.2f} (target <= {TARGET_RATIO:.1f}; "
        f"cli baseline {baseline:.1f} s, {FILES / baseline:.1f} files/s)"
    )
    print(f"rotation report: {report.summary()}")
    points = ", ".join(f"{done:,} files: {mib:.0f} MiB" for done, mib in probe.samples)
    print(f"resident memory: before {rss_before:.0f} MiB; {points}; peak {peak_rss_mib():.0f} MiB")
    complete = (
        report.ok
        and verified == FILES == rotated.objects
        and cli_before.objects == cli_after.objects == FILES
    )
    if not complete:
        print("INCOMPLETE: not every file was shipped and verified")
    return 0 if complete and ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
