"""The dead-letter vault's contract in memory, for unit tests of what seals and opens letters.

The Redis vault itself (its scripts and its ACL user) is tested against a real Redis in
tests/integration/test_dlq_vault.py.
"""

from __future__ import annotations

from receiptflow.dlq_seal import new_data_key
from receiptflow.dlq_vault import KeyState
from receiptflow.errors import DeadLetterVaultError


class MemoryVault:
    """Data keys by card hash; erasing a card deletes its key and refuses a new one; the first
    ``down_for`` calls fail as a Redis that does not answer."""

    def __init__(self, down_for: int = 0) -> None:
        self.keys: dict[str, bytes] = {}
        self.erased: set[str] = set()
        self.down_for = down_for
        self.calls = 0

    def _answer(self) -> None:
        self.calls += 1
        if self.calls <= self.down_for:
            raise DeadLetterVaultError("the vault is down (test)")

    def key_for_writing(self, subject: str) -> bytes | None:
        self._answer()
        if subject in self.erased:
            return None
        return self.keys.setdefault(subject, new_data_key())

    def key_for_reading(self, subject: str) -> KeyState:
        self._answer()
        if subject in self.erased:
            return KeyState(erased=True, key=None)
        return KeyState(erased=False, key=self.keys.get(subject))

    def erase(self, subject: str) -> None:
        self.erased.add(subject)
        self.keys.pop(subject, None)
