"""The consent history of an export, as a card holder reads it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from receiptflow.jobs.consent_history import NOT_RECORDED, consent_history

T = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)


def _row(at: datetime, appended: datetime | None, product: bool, email: bool, **proof: str) -> dict[str, object]:
    return {
        "card_id": "6390000000001",
        "changed_at": at.isoformat(),
        "product_data_marketing": product,
        "electronic_marketing": email,
        "source": "app",
        "source_topic": "consents",
        "source_partition": 0,
        "source_offset": 1,
        "appended_at": None if appended is None else appended.isoformat(),
        "principal": proof.get("principal", ""),
        "channel": proof.get("channel", ""),
        "text_version": proof.get("text_version", ""),
    }


def test_the_history_is_in_written_order_in_local_time_with_who_how_and_which_text() -> None:
    grant = _row(T + timedelta(days=1), T, True, True, principal="consent-app", channel="store", text_version="v1")
    withdrawal = _row(T + timedelta(minutes=1), T + timedelta(minutes=1), False, True,
                      principal="consent-web", channel="web", text_version="web-2026-12")  # fmt: skip
    history = consent_history([withdrawal, grant])  # as the warehouse happens to return them
    assert [h["channel"] for h in history] == ["store", "web"]  # written order, not the dates
    first, second = history
    assert first["when"] == "2026-12-08 12:00:00 EET (dated 2026-12-09 12:00:00 EET)"
    assert first["what"] == "product data for marketing: allowed; e-mail marketing: allowed"
    assert first["how"] == "through a store, written by consent-app, consent text version v1"
    assert second["when"] == "2026-12-08 12:01:00 EET"
    assert second["what"] == (
        "product data for marketing: now not allowed (was allowed); e-mail marketing: allowed (unchanged)"
    )
    assert second["how"] == "through the web page, written by consent-web, consent text version web-2026-12"
    assert "source_offset" not in second and "card_id" not in second  # the export's own fields stay out
    assert second["product_data_marketing"] is False  # the stored values are kept for machines


def test_a_change_of_before_the_proof_says_so_and_without_an_append_time_its_date_counts() -> None:
    (entry,) = consent_history([_row(T, None, False, False)])
    assert entry["how"] == NOT_RECORDED
    assert entry["when"] == "2026-12-08 12:00:00 EET"
