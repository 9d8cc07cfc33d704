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


def _with_v2(tmp_path: Path, subject: str, change: Callable[[dict[str, Any]], None]) -> Path:
    """Copy the schemas and add ``subject`` v2 = v1 with ``change`` applied."""
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    v2 = json.loads((target / subject / "v1.avsc").read_text())
    change(v2)
    (target / subject / "v2.avsc").write_text(json.dumps(v2))
    ids = json.loads((target / "ids.json").read_text())
    next_id = max(e["id"] for e in ids["schemas"]) + 1
    ids["schemas"].append({"id": next_id, "subject": subject, "version": 2, "file": f"{subject}/v2.avsc"})
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
    broken = _with_v2(tmp_path, "checkout", breaking)
    problems = check_backward(broken)
    assert problems, "a breaking change must be reported"
    assert all(p.subject == "checkout" and p.writer_version == 1 and p.reader_version == 2 for p in problems)
    with pytest.raises(IncompatibleSchemaError, match="checkout: v2 cannot read data written with v1"):
        assert_backward_compatible(broken)


def test_the_checker_names_the_break_and_where(tmp_path: Path) -> None:
    problems = check_backward(_with_v2(tmp_path, "checkout", _add_required_field))
    assert [str(p) for p in problems] == [
        "checkout: v2 cannot read data written with v1: reader_field_missing_default_value (loyalty_tier) at /fields/11"
    ]


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

    assert check_backward(_with_v2(tmp_path, "checkout", add_optional)) == []
