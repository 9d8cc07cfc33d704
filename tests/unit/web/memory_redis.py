"""The few Redis commands the session store uses, in memory with a clock, for the HTTP layer's unit tests.

Strings with a TTL (``GET``, ``SET`` with ``EX``/``NX``/``XX``, ``EXPIRE``, ``DEL``) and sets (``SADD``,
``SREM``, ``SMEMBERS``), as Redis answers them; the same store against the real Redis is
tests/integration/test_web_sessions.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class MemoryRedis:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.values: dict[str, Any] = {}
        self.expires: dict[str, float] = {}

    def _live(self, key: str) -> bool:
        if key in self.expires and self.expires[key] <= self.clock():
            self.values.pop(key, None)
            self.expires.pop(key, None)
        return key in self.values

    def get(self, key: str) -> str | None:
        return self.values[key] if self._live(key) else None

    def set(self, key: str, value: str, ex: int | None = None, nx: bool = False, xx: bool = False) -> bool | None:
        exists = self._live(key)
        if (nx and exists) or (xx and not exists):
            return None
        self.values[key] = value
        self.expires.pop(key, None)
        if ex is not None:
            self.expires[key] = self.clock() + ex
        return True

    def expire(self, key: str, seconds: int) -> bool:
        if not self._live(key):
            return False
        self.expires[key] = self.clock() + seconds
        return True

    def delete(self, *keys: str) -> int:
        found = [k for k in keys if self._live(k)]
        for k in found:
            self.values.pop(k)
            self.expires.pop(k, None)
        return len(found)

    def sadd(self, key: str, member: str) -> int:
        if not self._live(key):
            self.values[key] = set()
        members: set[str] = self.values[key]
        added = member not in members
        members.add(member)
        return int(added)

    def srem(self, key: str, member: str) -> int:
        if not self._live(key) or member not in self.values[key]:
            return 0
        self.values[key].discard(member)
        return 1

    def smembers(self, key: str) -> set[str]:
        return set(self.values[key]) if self._live(key) else set()

    def pipeline(self, transaction: bool = True) -> MemoryPipeline:
        return MemoryPipeline(self)


class MemoryPipeline:
    def __init__(self, client: MemoryRedis) -> None:
        self.client = client
        self.calls: list[Callable[[], Any]] = []

    def sadd(self, key: str, member: str) -> None:
        self.calls.append(lambda: self.client.sadd(key, member))

    def expire(self, key: str, seconds: int) -> None:
        self.calls.append(lambda: self.client.expire(key, seconds))

    def execute(self) -> list[Any]:
        return [call() for call in self.calls]
