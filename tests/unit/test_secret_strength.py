"""Production refuses the bundles' placeholder secrets and guessable ones, for every secret it is given.

The placeholders are read from the committed bundle files (``deploy/env.example``,
``deploy/k8s/secret.yaml``), so a placeholder added there that the check would let through fails here.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from receiptflow.config import Settings
from receiptflow.errors import ConfigError
from receiptflow.redis_auth import RedisRole, connection_url
from receiptflow.secret_strength import MIN_BITS, entropy_bits, secret_problem
from receiptflow.secrets import analytics_key, erasure_salt
from receiptflow.web.auth import web_key

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def bundle_placeholders() -> dict[str, str]:
    """Every secret value the bundles commit, by file and variable."""
    found: dict[str, str] = {}
    for line in (ROOT / "deploy" / "env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            found[f"env.example {name.strip()}"] = value.strip()
    secret = yaml.safe_load((ROOT / "deploy" / "k8s" / "secret.yaml").read_text(encoding="utf-8"))
    for name, value in secret["stringData"].items():
        found[f"secret.yaml {name}"] = str(value)
    return found


def test_the_bundles_commit_placeholders_only_and_each_is_refused() -> None:
    placeholders = bundle_placeholders()
    assert len(placeholders) >= 10 and any(k.startswith("secret.yaml") for k in placeholders)
    refused = {k: secret_problem("RECEIPTFLOW_X", v) for k, v in placeholders.items()}
    assert [k for k, problem in refused.items() if problem is None] == []
    # Also when someone changes its case or frames it (the mark is matched in any case).
    assert secret_problem("X", "my-Replace-Me-" + secrets.token_hex(16)) is not None


def _production(tmp_path: Path, **kw: object) -> Settings:
    return Settings(local={"data_dir": tmp_path}, deployment="production", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", sorted(set(bundle_placeholders().values())))
def test_production_refuses_each_placeholder_for_every_secret_it_reads(tmp_path: Path, value: str) -> None:
    given_value = SecretStr(value)
    checks = [
        ("RECEIPTFLOW_ERASURE_SALT", lambda: erasure_salt(_production(tmp_path, erasure_salt=given_value))),
        ("RECEIPTFLOW_ANALYTICS_KEY", lambda: analytics_key(_production(tmp_path, analytics_key=given_value))),
        ("RECEIPTFLOW_WEB_SECRET_KEY", lambda: web_key(_production(tmp_path, web={"secret_key": given_value}))),
        (
            "RECEIPTFLOW_REDIS_SUPPORT_PASSWORD",
            lambda: connection_url(_production(tmp_path, redis_support_password=given_value), RedisRole.SUPPORT),
        ),
        (
            "RECEIPTFLOW_REDIS_AUDITOR_PASSWORD",
            lambda: connection_url(_production(tmp_path, redis_auditor_password=given_value), RedisRole.AUDITOR),
        ),
        (
            "RECEIPTFLOW_REDIS_PASSWORD",
            lambda: connection_url(_production(tmp_path, redis_password=given_value), RedisRole.WRITER),
        ),
        (
            "RECEIPTFLOW_WAREHOUSE_PASSWORD",
            lambda: _production(
                tmp_path, warehouse={"url": "postgresql://sink@db:5432/rf", "password": given_value}
            ).warehouse_connection_url(),
        ),
    ]
    for variable, use in checks:
        with pytest.raises(ConfigError) as refused:
            use()
        message = str(refused.value)
        assert variable in message and "token_hex" in message and "\n" not in message, message
        assert value not in message  # the error never repeats a secret


@pytest.mark.parametrize(
    "value",
    ["k" * 32, "abcd" * 8, "0123456789" * 2, "password12345678", "aaaaaaaabbbbbbbbccccccccdddddddd", "short"],
)
def test_production_refuses_low_entropy_values(tmp_path: Path, value: str) -> None:
    assert secret_problem("RECEIPTFLOW_ERASURE_SALT", value) is not None
    with pytest.raises(ConfigError, match="RECEIPTFLOW_ERASURE_SALT is too"):
        erasure_salt(_production(tmp_path, erasure_salt=SecretStr(value)))


@given(st.integers(16, 64))
def test_generated_secrets_pass(n_bytes: int) -> None:
    for value in (secrets.token_hex(n_bytes), secrets.token_urlsafe(n_bytes)):
        assert secret_problem("X", value) is None, value
    assert entropy_bits(secrets.token_hex(32)) > 3 * MIN_BITS


def test_a_good_given_secret_is_used_and_non_production_keeps_its_generated_ones(tmp_path: Path) -> None:
    good = secrets.token_hex(32)
    assert erasure_salt(_production(tmp_path, erasure_salt=SecretStr(good))) == good.encode()
    url = _production(tmp_path, warehouse={"url": "postgresql://sink@db:5432/rf", "password": SecretStr(good)})
    assert good in url.warehouse_connection_url()
    embedded = Settings(local={"data_dir": tmp_path / "embedded"}, bootstrap_servers="127.0.0.1:9092")
    assert not embedded.is_production
    assert len(erasure_salt(embedded)) == 64 and len(web_key(embedded)) == 64  # generated per install
    # A local install given a short key still gets the length check, and no entropy rule.
    with pytest.raises(ConfigError, match="too short"):
        erasure_salt(Settings(local={"data_dir": tmp_path}, erasure_salt=SecretStr("short")))
    assert erasure_salt(Settings(local={"data_dir": tmp_path}, erasure_salt=SecretStr("x" * 32))) == b"x" * 32
