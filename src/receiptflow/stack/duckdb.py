"""The DuckDB warehouse of the embedded stack: no server, just a file under the data dir.

``stack up`` only makes sure the folder exists; the file itself is created (and migrated) by the
sink when it first opens it. When the warehouse is PostgreSQL this component reports that server as
"external" (or the embedded one started with ``--with-postgres``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ..config import Settings
from .process import ComponentStatus

DUCKDB_PREFIX = "duckdb:///"


class DuckDBFile:
    """Where the DuckDB warehouse file lives; nothing to start or stop."""

    name = "duckdb"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.resolved_warehouse_url

    @property
    def path(self) -> Path | None:
        """The DuckDB file, None when the warehouse is not DuckDB."""
        if not self.url.startswith(DUCKDB_PREFIX):
            return None
        return Path(self.url.removeprefix(DUCKDB_PREFIX)).expanduser()

    def status(self) -> ComponentStatus:
        path = self.path
        if path is None:
            parts = urlsplit(self.url)
            where = f"{parts.hostname or '?'}:{parts.port or 5432}{parts.path}"
            return ComponentStatus("warehouse", "external", None, where)
        detail = "exists" if path.exists() else "created by the sink on first use"
        return ComponentStatus(self.name, "file", None, str(path), detail)

    def up(self) -> ComponentStatus:
        """Make sure the folder of the DuckDB file exists."""
        path = self.path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        return self.status()
