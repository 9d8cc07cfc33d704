"""Codec: Confluent framing, schema ids from the repo, resolution with the newest reader."""

from __future__ import annotations

import json
import shutil
import struct
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from receiptflow.cells import Cell, CellKey, Family
from receiptflow.codec import HEADER_SIZE, Codec, SchemaCatalog, schema_id_of
from receiptflow.errors import DecodeError, SchemaError
from receiptflow.models import Checkout, CheckoutLine, PaymentMethod
from receiptflow.schemacheck import load_samples

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _checkout() -> Checkout:
    return Checkout(
        receipt_id="r1",
        chain="PRISMA",
        store_id="PRISMA-1",
        register_id="3",
        card_id="6390010000000001",
        event_time=datetime.fromisoformat("2026-11-24T10:15:00.250+02:00"),
        payment_method=PaymentMethod.CARD,
        total_cents=387,
        lines=(
            CheckoutLine(1, "6410405082657", "dairy", 2.0, 129, 258),
            CheckoutLine(2, "6408430000128", "vegetables", 0.432, 299, 129),
        ),
    )


def test_bundled_catalogue_matches_ids_file() -> None:
    catalog = SchemaCatalog.bundled()
    ids = json.loads((SCHEMAS / "ids.json").read_text())["schemas"]
    assert {(e["subject"], e["version"]) for e in ids} == {
        (s, v.version) for s in catalog.subjects() for v in catalog.versions(s)
    }
    assert sorted(catalog.subjects()) == [
        "analytics_basket",
        "analytics_cell",
        "checkout",
        "consent_change",
        "dead_letter",
        "purchase",
        "retraction",
    ]


def test_wire_format_is_magic_byte_and_big_endian_id() -> None:
    codec = Codec()
    data = codec.encode("checkout", _checkout().to_avro())
    magic, schema_id = struct.unpack(">bI", data[:HEADER_SIZE])
    assert magic == 0
    assert schema_id == 6 == schema_id_of(data)  # checkout v2, the newest version, in ids.json


def test_checkout_round_trip_keeps_zone_and_values() -> None:
    codec = Codec()
    original = _checkout()
    decoded = codec.decode(codec.encode("checkout", original.to_avro()), expect="checkout")
    assert decoded.subject == "checkout"
    again = Checkout.from_avro(decoded.value)
    assert again == original
    assert again.event_time.utcoffset() == original.event_time.utcoffset()
    assert again.event_time.astimezone(UTC) == datetime(2026, 11, 24, 8, 15, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "undecodable"),
        (b"", "undecodable"),
        (b"\x01\x00\x00\x00\x01abc", "undecodable"),
        (b"\x00\x00\x00\x03\xe7abc", "unknown_schema_id"),
        (b"\x00\x00\x00\x00\x01\xff", "undecodable"),
    ],
)
def test_bad_bytes_raise_decode_error_with_reason(data: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        Codec().decode(data)
    assert info.value.reason == reason


def test_trailing_garbage_is_rejected() -> None:
    codec = Codec()
    data = codec.encode("checkout", _checkout().to_avro()) + b"\x00"
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(data)


def test_wrong_subject_is_rejected() -> None:
    codec = Codec()
    data = codec.encode("consent_change", load_samples(SCHEMAS, SchemaCatalog.bundled().latest("consent_change"))[0])
    with pytest.raises(DecodeError) as info:
        codec.decode(data, expect="checkout")
    assert info.value.reason == "wrong_subject"


def test_record_not_fitting_schema_is_a_schema_error() -> None:
    with pytest.raises(SchemaError):
        Codec().encode("checkout", {"receipt_id": "x"})


def test_newer_reader_reads_older_writer(tmp_path: Path) -> None:
    """A new version with a new optional field: data framed with the older id decodes with the default filled in."""
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    latest = SchemaCatalog.from_dir(SCHEMAS).latest("consent_change")
    newer = dict(latest.raw)
    newer["fields"] = [*latest.raw["fields"], {"name": "sms_marketing", "type": "boolean", "default": False}]
    file = f"consent_change/v{latest.version + 1}.avsc"
    (target / file).write_text(json.dumps(newer))
    ids = json.loads((target / "ids.json").read_text())
    free = max(e["id"] for e in ids["schemas"]) + 1
    ids["schemas"].append({"id": free, "subject": "consent_change", "version": latest.version + 1, "file": file})
    (target / "ids.json").write_text(json.dumps(ids))

    old = Codec(SchemaCatalog.from_dir(SCHEMAS))
    new = Codec(SchemaCatalog.from_dir(target))
    sample = load_samples(SCHEMAS, latest)[0]
    decoded = new.decode(old.encode("consent_change", sample))
    assert decoded.writer_version == latest.version
    assert decoded.value["sms_marketing"] is False
    assert decoded.value["card_id"] == sample["card_id"]
    assert schema_id_of(new.encode("consent_change", decoded.value)) == free


def test_duplicate_schema_id_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    ids = json.loads((target / "ids.json").read_text())
    ids["schemas"][1]["id"] = ids["schemas"][0]["id"]
    (target / "ids.json").write_text(json.dumps(ids))
    with pytest.raises(SchemaError, match="used twice"):
        SchemaCatalog.from_dir(target)


def test_a_truncated_body_is_described_the_same_every_time() -> None:
    # The dead-letter message is for people and must not depend on the run: no object addresses.
    codec = Codec()
    encoded = codec.encode("checkout", _checkout().to_avro())
    for cut in range(1, 40):
        messages = set()
        for decode in (codec.decode, lambda d: codec.decode_checkout(d)[0]):
            with pytest.raises(DecodeError) as info:
                decode(encoded[:-cut])
            messages.add(info.value.message)
        assert all(" at 0x" not in m for m in messages), messages


def test_analytics_cell_round_trip() -> None:
    codec = Codec()
    cell = Cell(
        CellKey(Family.STORE_SKU, "prisma", date(2026, 11, 20), "prisma-017", None, "dairy", "641"), 12, 14, 15.5, 2990
    )
    decoded = codec.decode(codec.encode("analytics_cell", cell.to_avro(10)), expect="analytics_cell")
    assert Cell.from_avro(decoded.value) == cell
    assert decoded.value["k"] == 10 and decoded.value["window_id"] == "prisma/2026-11-20"
