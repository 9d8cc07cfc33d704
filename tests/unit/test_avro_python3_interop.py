"""Interoperability with avro-python3: fastavro's bytes read by it, and its bytes equal fastavro's.

avro-python3 installs the same module name (``avro``) as Apache's maintained ``avro`` package, which
the contract check uses, so the two cannot share one environment: the setup installs avro-python3 in
a folder of its own (``.venv/avro-python3``) and this test runs it in one child process with that
folder first on its path. The child decodes every record fastavro wrote, writes it again, and sends
both back; the parent compares them with what fastavro wrote and reads.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from receiptflow.codec import SchemaVersion

from .test_schemas_interop import VERSIONS, _fastavro_bytes, _ids, _normalise, _records

ROOT = Path(__file__).resolve().parents[2]
AVRO_PYTHON3 = Path(sys.prefix) / "avro-python3"

# Run inside the child: decode with avro-python3, write again, return both (bytes and datetimes as JSON).
CHILD = r"""
import base64, io, json, sys
import avro, avro.io, avro.schema

def plain(value):
    if hasattr(value, "timestamp") and hasattr(value, "tzinfo"):
        return round(value.timestamp() * 1000)
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value

jobs = json.load(sys.stdin)
out = {"version": avro.__version__, "results": []}
for job in jobs:
    schema = avro.schema.parse(job["schema"])
    decoded, written = [], []
    for data in job["records"]:
        value = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(base64.b64decode(data))))
        buf = io.BytesIO()
        avro.io.DatumWriter(schema).write(value, avro.io.BinaryEncoder(buf))
        decoded.append(plain(value))
        written.append(base64.b64encode(buf.getvalue()).decode())
    out["results"].append({"decoded": decoded, "written": written})
json.dump(out, sys.stdout)
"""


def _json_plain(value: Any) -> Any:
    """The parent's side of the child's ``plain``: bytes as base64 objects, times as millis."""
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: _json_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_plain(v) for v in value]
    return _normalise(value)


@pytest.fixture(scope="module")
def avro_python3() -> dict[str, Any]:
    """Every version's records through avro-python3, in one child process."""
    assert (AVRO_PYTHON3 / "avro").is_dir(), f"avro-python3 is not installed in {AVRO_PYTHON3}: run `make setup`"
    jobs = []
    for version in VERSIONS:
        records = _records(version)
        jobs.append(
            {
                "schema": (ROOT / "schemas" / version.path).read_text(),
                "records": [base64.b64encode(_fastavro_bytes(version, r)).decode() for r in records],
            }
        )
    env = dict(os.environ, PYTHONPATH=str(AVRO_PYTHON3))
    done = subprocess.run(
        [sys.executable, "-c", CHILD], input=json.dumps(jobs), capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_child_runs_avro_python3(avro_python3: dict[str, Any]) -> None:
    # The maintained package is 1.11+; avro-python3's last release is 1.10.x.
    assert avro_python3["version"].startswith("1.10."), avro_python3["version"]


@pytest.mark.parametrize("index", range(len(VERSIONS)), ids=[_ids(v) for v in VERSIONS])
def test_fastavro_and_avro_python3_agree(avro_python3: dict[str, Any], index: int) -> None:
    version: SchemaVersion = VERSIONS[index]
    records = _records(version)
    result = avro_python3["results"][index]
    assert len(result["decoded"]) == len(records) > 0
    for record, decoded, written in zip(records, result["decoded"], result["written"], strict=True):
        assert decoded == _json_plain(record)
        assert base64.b64decode(written) == _fastavro_bytes(version, record)
