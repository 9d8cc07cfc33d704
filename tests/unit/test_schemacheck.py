"""The backward-compatibility check passes on the repo and fails on deliberately broken copies."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from receiptflow.errors import IncompatibleSchemaError
from receiptflow.schemacheck import assert_backward_compatible, check_backward

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_repo_schemas_are_backward_compatible() -> None:
    assert check_backward(SCHEMAS) == []


def _with_next(tmp_path: Path, subject: str, change: Callable[[dict[str, Any]], None]) -> Path:
    """Copy the schemas and add the next version of ``subject``: its newest one with ``change`` applied."""
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    ids = json.loads((target / "ids.json").read_text())
    newest = max((e for e in ids["schemas"] if e["subject"] == subject), key=lambda e: e["version"])
    schema = json.loads((target / newest["file"]).read_text())
    change(schema)
    version = newest["version"] + 1
    (target / subject / f"v{version}.avsc").write_text(json.dumps(schema))
    next_id = max(e["id"] for e in ids["schemas"]) + 1
    ids["schemas"].append({"id": next_id, "subject": subject, "version": version, "file": f"{subject}/v{version}.avsc"})
    (target / "ids.json").write_text(json.dumps(ids))
    return target


def _add_required_field(s: dict[str, Any]) -> None:
    s["fields"].append({"name": "loyalty_tier", "type": "string"})


def _change_type(s: dict[str, Any]) -> None:
    for f in s["fields"]:
        if f["name"] == "total_cents":
            f["type"] = "string"


def _drop_enum_symbol(s: dict[str, Any]) -> None:
    for f in s["fields"]:
        if f["name"] == "payment_method":
            f["type"]["symbols"] = ["CARD", "CASH"]
            del f["type"]["default"]


def _rename_without_alias(s: dict[str, Any]) -> None:
    for f in s["fields"]:
        if f["name"] == "store_id":
            f["name"] = "shop_id"


@pytest.mark.parametrize(
    "breaking", [_add_required_field, _change_type, _drop_enum_symbol, _rename_without_alias], ids=lambda f: f.__name__
)
def test_breaking_change_fails_the_check(tmp_path: Path, breaking: Callable[[dict[str, Any]], None]) -> None:
    broken = _with_next(tmp_path, "checkout", breaking)
    problems = check_backward(broken)
    assert problems, "a breaking change must be reported"
    # Every older version is checked against the new one: v1 and v2 data alike.
    assert {p.writer_version for p in problems} == {1, 2}
    assert all(p.subject == "checkout" and p.reader_version == 3 for p in problems)
    with pytest.raises(IncompatibleSchemaError, match="checkout: v3 cannot read data written with v1"):
        assert_backward_compatible(broken)


def test_the_checker_names_the_break_and_where(tmp_path: Path) -> None:
    problems = check_backward(_with_next(tmp_path, "checkout", _add_required_field))
    why = "reader_field_missing_default_value (loyalty_tier) at /fields/15"
    assert [str(p) for p in problems] == [f"checkout: v3 cannot read data written with v{n}: {why}" for n in (1, 2)]


def test_a_sample_that_does_not_fit_its_schema_is_reported(tmp_path: Path) -> None:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    samples = json.loads((target / "consent_change" / "v1.samples.json").read_text())
    samples[0]["product_data_marketing"] = "yes"
    (target / "consent_change" / "v1.samples.json").write_text(json.dumps(samples))
    problems = check_backward(target)
    assert [(p.subject, p.writer_version) for p in problems] == [("consent_change", 1)]
    assert "sample 0 invalid" in problems[0].error


def test_compatible_change_passes(tmp_path: Path) -> None:
    def add_optional(s: dict[str, Any]) -> None:
        s["fields"].append({"name": "loyalty_tier", "type": ["null", "string"], "default": None})
        for f in s["fields"]:
            if f["name"] == "store_id":
                f["name"] = "shop_id"
                f["aliases"] = ["store_id"]

    assert check_backward(_with_next(tmp_path, "checkout", add_optional)) == []
