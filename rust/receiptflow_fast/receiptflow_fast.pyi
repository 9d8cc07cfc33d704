"""Types of the compiled fast path (rust/receiptflow_fast/src/lib.rs)."""

from collections.abc import Callable
from typing import TypeVar

_Context = TypeVar("_Context")

# decide(receipt id, chain, store id, card id or None, event time in ms since the epoch, UTC offset in minutes)
# -> None (nothing to write) or (level, marketing level or None, policy version,
#    (product data marketing, electronic marketing, known), context handed back by handle).
Decide = Callable[
    [str, str, str, str | None, int, int],
    tuple[int, int | None, str, tuple[bool, bool, bool], _Context] | None,
]

class Router:
    def __init__(
        self,
        checkouts: list[tuple[int, str, bool]],
        purchase: tuple[bytes, str],
        basket: tuple[bytes, str] | None,
        key: bytes | None,
    ) -> None: ...
    # One reading of the checkout. A str: why it was left to the Python core ("unframed", "unknown_schema",
    # "unreadable", "unsure"; decide not called). None: decide answered None. Otherwise (context, customer,
    # marketing or None, basket or None), customer None when the records could not be written.
    def handle(
        self, value: bytes, now_ms: int, decide: Decide[_Context]
    ) -> tuple[_Context, bytes | None, bytes | None, bytes | None] | str | None: ...
    # The older two-call form (each reads the checkout), kept for older revisions' Python code.
    def decode(self, value: bytes, now_ms: int) -> tuple[str, str, str, str | None, int, int] | None: ...
    def route(
        self,
        value: bytes,
        level: int,
        marketing_level: int | None,
        policy_version: str,
        consent: tuple[bool, bool, bool],
        processed_ms: int,
    ) -> tuple[bytes, bytes | None, bytes | None] | None: ...
