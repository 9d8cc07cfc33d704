"""Redis roles: which login each role gets, in which order the sources are tried, the rendered ACL."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from redis.connection import parse_url

from receiptflow.config import Settings
from receiptflow.errors import ConfigError
from receiptflow.redis_auth import (
    TEMPLATE_USERS,
    RedisRole,
    acl_template,
    connection_url,
    embedded_acl,
    render_acl,
    role_password,
)

ROOT = Path(__file__).resolve().parents[2]


def _login(url: str) -> tuple[str | None, str | None]:
    kwargs = parse_url(url)
    return kwargs.get("username"), kwargs.get("password")


def test_the_shipped_template_is_the_committed_deploy_file() -> None:
    assert acl_template() == (ROOT / "deploy" / "redis" / "users.acl").read_text(encoding="utf-8")


def test_render_switches_on_only_the_named_users_with_their_hash_and_keeps_the_rules() -> None:
    template = acl_template()
    rendered = render_acl(template, {"profile-writer": ("pw-user", "ab" * 32)})
    lines = dict(zip(template.splitlines(), rendered.splitlines(), strict=True))
    writer = next(r for t, r in lines.items() if t.startswith("user profile-writer "))
    assert writer.startswith(
        f"user pw-user on resetpass #{'ab' * 32} resetkeys ~rf:{{*}}:p ~rf:{{*}}:seen %R~rf:{{*}}:x"
    )
    assert writer.endswith("(~rf:{*}:x resetchannels -@all +setnx) (~rf:erased resetchannels -@all +sadd)")
    others = [r for t, r in lines.items() if not t.startswith("user profile-writer ")]
    assert others == [t for t in lines if not t.startswith("user profile-writer ")]  # still off
    with pytest.raises(ConfigError):
        render_acl(template, {"support": ("two words", "00" * 32)})


def test_the_embedded_acl_has_every_role_on_with_generated_passwords_in_private_files(tmp_path: Path) -> None:
    settings = Settings(local={"data_dir": tmp_path / "data"}, kafka={"bootstrap_servers": "127.0.0.1:9092"})
    rendered = embedded_acl(settings)
    assert "user default off" in rendered and "nopass" not in rendered
    for role, user in TEMPLATE_USERS.items():
        password = role_password(settings, role)
        assert password is not None and len(password) == 64
        assert password not in rendered
        assert f"user {user} on resetpass #{hashlib.sha256(password.encode()).hexdigest()} " in rendered
        path = tmp_path / "data" / "secrets" / f"redis-{user}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data" / "secrets").stat().st_mode) == 0o700
    assert embedded_acl(settings) == rendered  # generated once per install, then reused


def test_each_role_connects_as_its_own_user_in_order_of_the_sources(tmp_path: Path) -> None:
    base = {"data_dir": tmp_path / "data", "bootstrap_servers": "127.0.0.1:9092", "redis_url": "redis://h:7/3"}
    # Nothing generated yet and nothing given: an unauthenticated client (a Redis without ACL users).
    assert connection_url(Settings(**base), RedisRole.WRITER) == "redis://h:7/3"
    embedded_acl(Settings(**base))  # what `stack up` does
    generated = {role: role_password(Settings(**base), role) for role in RedisRole}
    for role in (RedisRole.WRITER, RedisRole.MARKETING, RedisRole.SUPPORT, RedisRole.CUSTOMER):
        assert _login(connection_url(Settings(**base), role)) == (TEMPLATE_USERS[role], generated[role])
    assert len({generated[r] for r in RedisRole}) == len(RedisRole)  # a password of its own each
    # Given per role (production): wins over the generated one, with the configured user name.
    given = Settings(**base, redis={"marketing_user": "mkt", "marketing_password": "p@ss/w:rd#1"})
    assert _login(connection_url(given, RedisRole.MARKETING)) == ("mkt", "p@ss/w:rd#1")
    assert parse_url(connection_url(given, RedisRole.MARKETING))["db"] == 3
    own = Settings(**base, redis={"customer_user": "cust", "customer_password": "c-secret"})
    assert _login(connection_url(own, RedisRole.CUSTOMER)) == ("cust", "c-secret")
    # Credentials in the URL: one login for every role without a password of its own.
    single = Settings(**base, redis={"password": "one", "support_password": "dpo"})
    assert _login(connection_url(single, RedisRole.WRITER)) == (None, "one")
    assert _login(connection_url(single, RedisRole.SUPPORT)) == ("support", "dpo")
    # A production install never uses generated files.
    production = Settings(**base, privacy={"deployment": "production"})
    assert connection_url(production, RedisRole.WRITER) == "redis://h:7/3"
    assert role_password(production, RedisRole.ADMIN) is None


def test_a_production_install_does_not_generate_role_passwords(tmp_path: Path) -> None:
    settings = Settings(local={"data_dir": tmp_path / "data"}, privacy={"deployment": "production"})
    with pytest.raises(ConfigError, match="RECEIPTFLOW_REDIS_WRITER_PASSWORD"):
        embedded_acl(settings)
    assert not (tmp_path / "data" / "secrets").exists()
