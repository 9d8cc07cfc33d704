"""A command run with another data folder than the stack's: Redis refuses the login, and the line says why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from receiptflow.config import Settings
from receiptflow.redis_auth import RedisRole

from .support import env_for

pytestmark = pytest.mark.integration


def test_profile_with_another_data_folder_names_where_the_role_passwords_are(
    settings: Settings, tmp_path: Path
) -> None:
    env = env_for(settings)
    for role in RedisRole:  # every role's password: each view reads as a role of its own
        env.pop(f"RECEIPTFLOW_REDIS_{role.name}_PASSWORD", None)
    other = tmp_path / "other-data"
    other.mkdir()
    env["RECEIPTFLOW_DATA_DIR"] = str(other)
    done = subprocess.run(
        [sys.executable, "-m", "receiptflow", "profile", "CARD-1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    err = " ".join(done.stderr.split())
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Redis refused the login" in err and str(other / "secrets") in err and "RECEIPTFLOW_DATA_DIR" in err, err
    assert "Traceback" not in err
