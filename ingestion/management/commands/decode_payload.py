"""`manage.py decode_payload FILE…`: decode raw EAGLE replies or push bodies, as the playground does."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.eagle.decoders import decode_payload
from ingestion.eagle.record_types import RECORD_TYPES
from ingestion.records import FetchFailure, Source

MAX_PAYLOAD_BYTES = 1 << 20


class Command(BaseCommand):
    help = (
        "Decode EAGLE replies (XML or JSON; cloud, local or push) and print the record or failure."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", metavar="FILE", help="a reply file, or - for stdin")
        parser.add_argument("--cloud-id", default="", help="the gateway the reply came from")
        parser.add_argument(
            "--record-type", choices=sorted(RECORD_TYPES), help="what the reply must carry"
        )
        parser.add_argument(
            "--source", choices=[source.value for source in Source], help="default: from the shape"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        failures = 0
        for name in options["files"]:
            text = self.read(name)
            result = decode_payload(
                text,
                cloud_id=options["cloud_id"].lower(),
                source=options["source"],
                record_type=options["record_type"],
            )
            prefix = f"{name}: " if len(options["files"]) > 1 else ""
            if isinstance(result, FetchFailure):
                failures += 1
                self.stdout.write(f"{prefix}{result.failure_class.value}: {result.message}")
                if result.reading is not None:
                    self.stdout.write(self.dump(result.reading.to_record()))
            else:
                self.stdout.write(prefix + self.dump(result.to_record()))
        if failures:
            raise CommandError(f"{failures} of {len(options['files'])} payloads gave no reading")

    def read(self, name: str) -> str:
        try:
            if name == "-":
                data = sys.stdin.buffer.read(MAX_PAYLOAD_BYTES + 1)
            else:
                with Path(name).open("rb") as payload:
                    data = payload.read(MAX_PAYLOAD_BYTES + 1)
        except OSError as exc:
            raise CommandError(f"cannot read {name}: {exc.strerror or exc}") from None
        if len(data) > MAX_PAYLOAD_BYTES:
            raise CommandError(
                f"{name} is larger than {MAX_PAYLOAD_BYTES} bytes: not an EAGLE reply"
            )
        return data.decode("utf-8", errors="replace")

    @staticmethod
    def dump(record: dict[str, Any]) -> str:
        return orjson.dumps(record, option=orjson.OPT_INDENT_2).decode()
