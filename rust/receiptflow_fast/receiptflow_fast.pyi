"""Types of the compiled fast path (rust/receiptflow_fast/src/lib.rs)."""

class Router:
    def __init__(
        self,
        checkouts: list[tuple[int, str, bool]],
        purchase: tuple[bytes, str],
        basket: tuple[bytes, str] | None,
        key: bytes | None,
    ) -> None: ...
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
