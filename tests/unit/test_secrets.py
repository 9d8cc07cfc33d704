"""Install secrets: given ones are used, the embedded stack generates one per install, production refuses."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from receiptflow.config import Settings
from receiptflow.errors import ConfigError
from receiptflow.secrets import analytics_key, erasure_salt, marketing_key, secret_path


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(local={"data_dir": tmp_path}, **kw)  # type: ignore[arg-type]


def test_generated_once_per_install_and_owner_only(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    first = erasure_salt(s)
    assert len(first) == 64
    assert erasure_salt(_settings(tmp_path)) == first  # every process of the install agrees
    path = secret_path(s, "erasure_salt")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert analytics_key(s) != first  # one secret per purpose
    assert erasure_salt(_settings(tmp_path / "other")) != first  # and per install


def test_given_secret_wins_and_must_not_be_trivial(tmp_path: Path) -> None:
    s = _settings(tmp_path, erasure_salt=SecretStr("x" * 32))
    assert erasure_salt(s) == b"x" * 32
    assert not secret_path(s, "erasure_salt").exists()
    with pytest.raises(ConfigError, match="too short"):
        analytics_key(_settings(tmp_path, analytics_key=SecretStr("short")))


@pytest.mark.parametrize(
    ("servers", "deployment", "production"),
    [
        ("127.0.0.1:9092", "auto", False),
        ("localhost:9092,[::1]:9093", "auto", False),
        ("kafka-1.internal:9092", "auto", True),
        ("127.0.0.1:9092,10.1.2.3:9092", "auto", True),
        ("kafka-1.internal:9092", "embedded", False),
        ("127.0.0.1:9092", "production", True),
    ],
)
def test_production_refuses_missing_secrets(tmp_path: Path, servers: str, deployment: str, production: bool) -> None:
    s = _settings(tmp_path, bootstrap_servers=servers, deployment=deployment)
    assert s.is_production is production
    if production:
        with pytest.raises(ConfigError, match="RECEIPTFLOW_ANALYTICS_KEY is not set"):
            analytics_key(s)
        with pytest.raises(ConfigError, match="RECEIPTFLOW_ERASURE_SALT is not set"):
            erasure_salt(s)
        with pytest.raises(ConfigError, match="RECEIPTFLOW_MARKETING_KEY is not set"):
            marketing_key(s)
        assert not (tmp_path / "secrets").exists()
    else:
        assert len(analytics_key(s)) == 64


def test_the_marketing_key_is_its_own_secret(tmp_path: Path) -> None:
    # Generated per install apart from the erasure salt (the marketing reader holds one, not the other).
    s = _settings(tmp_path, bootstrap_servers="127.0.0.1:9092")
    assert marketing_key(s) != erasure_salt(s) and marketing_key(s) == marketing_key(s)
    assert stat.S_IMODE(secret_path(s, "marketing_key").stat().st_mode) == 0o600
    good = "9f1c2e7a4b8d0f3e6a5c1b2d7e8f0a4c"
    given = _settings(tmp_path, deployment="production", marketing_key=SecretStr(good))
    assert marketing_key(given) == good.encode()
    with pytest.raises(ConfigError, match="RECEIPTFLOW_MARKETING_KEY is too easy to guess"):
        marketing_key(_settings(tmp_path, deployment="production", marketing_key=SecretStr("m" * 32)))
    with pytest.raises(ConfigError, match="RECEIPTFLOW_MARKETING_KEY is too short"):
        marketing_key(_settings(tmp_path, deployment="production", marketing_key=SecretStr("short")))
