"""The base of every settings group: how a group reads its variables, and shared constants.

A group is a frozen ``BaseSettings`` whose fields each name their ``RECEIPTFLOW_`` variable as
``validation_alias``; :class:`receiptflow.config.Settings` composes the groups.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.sources import ENV_FILE_SENTINEL, DotenvType

ENV_PREFIX = "RECEIPTFLOW_"
DEFAULT_DATA_DIR = Path(".receiptflow")
KAFKA_LOGGER = logging.getLogger("receiptflow.librdkafka")


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (user names are kept, they help debugging)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class SettingsGroup(BaseSettings):
    """The settings of one component; each field reads the variable its ``validation_alias`` names.

    A group reads the environment and ``.env`` by itself when it is made (:class:`Settings` makes each
    one); explicit values are keyword arguments by field name and win over both.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True)

    def __init__(self, _env_file: DotenvType | None = ENV_FILE_SENTINEL, **values: Any) -> None:
        fields = type(self).model_fields
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no setting {', '.join(unknown)}")
        # The fields are populated by their variable's name only (never by the bare field name, which
        # would make the environment source read RECEIPTFLOW_-less variables such as PORT or URL).
        super().__init__(_env_file=_env_file, **{variable_name(fields[k]): v for k, v in values.items()})


def variable_name(info: FieldInfo) -> str:
    """The environment variable a group field reads (its ``validation_alias``)."""
    if not isinstance(info.validation_alias, str) or not info.validation_alias.startswith(ENV_PREFIX):
        raise TypeError(f"a settings field needs its {ENV_PREFIX} variable as validation_alias: {info!r}")
    return info.validation_alias
