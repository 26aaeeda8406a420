"""Hour-file lines decoded straight into typed fields: the one conversion of the columnar stores
(the Parquet export, ingestion/parquet.py; the SQL readings store, ingestion/readings_store.py).

`RecordLine` has the common fields of the record format, every registered record type's values
(each optional, its type checked by msgspec as the record type's `value_schema` says), and `raw`
kept as the exact JSON text of the line (`msgspec.Raw`), never parsed and re-serialised.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ingestion.eagle.record_types import RECORD_TYPES


def json_kind(schema: dict[str, Any]) -> tuple[str, bool]:
    """(JSON type, whether null is allowed) of a value's JSON Schema."""
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    (kind,) = [k for k in kinds if k != "null"]
    return kind, "null" in kinds


def _line_struct() -> type[msgspec.Struct]:
    value_fields: dict[str, Any] = {}
    python_types = {"number": float, "integer": int, "string": str, "boolean": bool}
    for record_type in RECORD_TYPES.values():
        for name, schema in record_type.value_schema.items():
            value_fields[name] = python_types[json_kind(schema)[0]] | None
    return msgspec.defstruct(
        "RecordLine",
        [
            ("record_type", str),
            ("cloud_id", str),
            ("meter_timestamp", int),
            ("received_at", str | None, None),
            ("source", str | None, None),
            ("format_version", int | None, None),
            *((name, kind, None) for name, kind in value_fields.items()),
            ("raw", msgspec.Raw, msgspec.Raw(b"{}")),
        ],
    )


RecordLine = _line_struct()
decoder = msgspec.json.Decoder(RecordLine)
# Every registered record type's value fields, in registry order.
VALUE_FIELDS = tuple(dict.fromkeys(name for t in RECORD_TYPES.values() for name in t.value_schema))
# Per record type: (its value fields, those of them a reading must have).
VALUES = {
    name: (
        tuple(record_type.value_schema),
        tuple(n for n, s in record_type.value_schema.items() if not json_kind(s)[1]),
    )
    for name, record_type in RECORD_TYPES.items()
}


def is_reading(record: Any) -> bool:
    """Whether a decoded line is a reading of a registered record type with every value that
    record type requires; anything else is not stored as a typed row (the hour file keeps it)."""
    values = VALUES.get(record.record_type)
    if values is None:
        return False
    # A plain loop: this runs for every line exported, and all() over a generator costs
    # more than twice as much.
    for name in values[1]:
        if getattr(record, name) is None:
            return False
    return True


def decode_lines(data: bytes) -> tuple[list[Any], int]:
    """The readings of an hour file's content (JSON lines), in file order, and how many of its
    non-empty lines are not readings (malformed, wrongly typed, incomplete, unknown type)."""
    records: list[Any]
    try:
        records = decoder.decode_lines(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        records = []
        for line in data.splitlines():
            if line.strip():
                try:
                    records.append(decoder.decode(line))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    records.append(None)
    readings = [record for record in records if record is not None and is_reading(record)]
    return readings, len(records) - len(readings)
