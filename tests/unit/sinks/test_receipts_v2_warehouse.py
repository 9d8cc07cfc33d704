"""Receipts v2 in the warehouse: the new columns, views net of refunds, segments and the rebuild on net figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from receiptflow.jobs.profile_rebuild import read_events
from receiptflow.jobs.segments import read_month
from receiptflow.models import Checkout, CheckoutLine, ConsentState, LineKind, PaymentMethod, ReceiptKind, Unit
from receiptflow.policy import load_policy
from receiptflow.processors.profiles.fold import fold
from receiptflow.processors.profiles.rules import default_rules
from receiptflow.processors.router.route import process
from receiptflow.receipt_parts import Adjustment, AdjustmentKind
from receiptflow.sinks import DuckDBSink, SinkRecord

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
CARD = "6390000000001"
POLICY = load_policy()


def _purchase(rid: str, when: datetime, lines: list[CheckoutLine], **kw: object) -> SinkRecord:
    c = Checkout(
        rid, "K_MARKET", "K_MARKET-0007", "1", CARD, when, PaymentMethod.CARD,
        sum(x.amount_cents for x in lines) + sum(a.amount_cents for a in kw.get("adjustments", ())),  # type: ignore[attr-defined]
        tuple(lines), **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    p = process(c, POLICY, ConsentState(True, True, True), NOW).customer
    return SinkRecord(p, "purchases.customer", 0, hash(rid) % 10_000)


SALE = [
    CheckoutLine(1, "6410100000000", "dairy", 2.0, 129, 258),
    CheckoutLine(2, "2300000000000", "vegetables", 0.5, 300, 150, unit=Unit.KG),
    CheckoutLine(3, "PANTTI-040", "deposit", 2.0, 40, 80, LineKind.DEPOSIT),
    CheckoutLine(4, "PANTTI-SLIP", "deposit", -1.0, 100, -100, LineKind.DEPOSIT_REFUND),
]
REFUND = [CheckoutLine(1, "6410100000000", "dairy", -1.0, 129, -129, LineKind.RETURN, ref_line_no=1)]


def test_a_refund_days_later_nets_the_sale_in_the_warehouse(tmp_path: Path) -> None:
    sold = datetime(2026, 11, 3, 10, tzinfo=UTC)
    sink = DuckDBSink(tmp_path / "w.duckdb", erasure_salt=b"test-erasure-salt-0123456789")
    sink.setup()
    try:
        sink.write([_purchase("S-1", sold, SALE)])
        sink.flush()
        refund = _purchase(
            "S-2", sold + timedelta(days=4), REFUND, receipt_kind=ReceiptKind.REFUND, original_receipt_id="S-1"
        )
        sink.write([refund])  # a later batch, as a refund arrives days later
        sink.flush()
        db = sink.warehouse
        assert db.query(
            "SELECT receipt_id, receipt_kind, original_receipt_id, total_cents, deposit_cents FROM receipts "
            "ORDER BY receipt_id"
        ) == [("S-1", "SALE", None, 388, -20), ("S-2", "REFUND", "S-1", -129, 0)]
        assert db.query(
            "SELECT line_no, line_kind, unit, ref_line_no FROM receipt_items WHERE receipt_id = 'S-1' ORDER BY line_no"
        ) == [(1, "SALE", "PIECE", None), (2, "SALE", "KG", None), (3, "DEPOSIT", "PIECE", None),
              (4, "DEPOSIT_REFUND", "PIECE", None)]  # fmt: skip
        # The sale with its refund: what it finally cost, and the goods without deposits.
        assert db.query("SELECT receipt_id, refunds, net_cents, net_goods_cents FROM receipts_net") == [
            ("S-1", 1, 388 - 129, 408 - 129)
        ]
        assert db.query("SELECT visits, refunds, net_cents, net_goods_cents FROM card_months_net") == [(1, 1, 259, 279)]
        # Segments count the sale once, the money net of the refund and without deposits.
        (month,) = read_month(db, "2026-11", default_product_data=True)
        assert (month.visits, month.spend_cents) == (1, 279)
        assert dict(month.groups or {}) == {"dairy": 129, "vegetables": 150}
        # The rebuild reads back what the live profile folded.
        events = read_events(db, CARD, CARD)[CARD]
        live = [r.purchase for r in (_purchase("S-1", sold, SALE), refund)]
        rules = default_rules()
        assert fold(events, rules) == fold(live, rules)
        assert fold(events, rules)[CARD].spend_cents == 279
    finally:
        sink.close()


def test_a_refund_whose_sale_is_not_held_is_its_own_row(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "w.duckdb", erasure_salt=b"test-erasure-salt-0123456789")
    sink.setup()
    try:
        sink.write(
            [
                _purchase(
                    "S-9", NOW - timedelta(days=1), REFUND, receipt_kind=ReceiptKind.REFUND, original_receipt_id="X"
                )
            ]
        )
        sink.flush()
        assert sink.warehouse.query("SELECT receipt_id, net_cents FROM receipts_net") == [("S-9", -129)]
    finally:
        sink.close()


def test_a_receipt_benefit_comes_off_the_stored_groups(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "w.duckdb", erasure_salt=b"test-erasure-salt-0123456789")
    sink.setup()
    try:
        bonus = (Adjustment(AdjustmentKind.BENEFIT, "BONUS", -100),)
        record = _purchase("S-3", NOW - timedelta(days=1), SALE, adjustments=bonus)
        assert record.purchase.total_cents == 288  # the lines' 388 less the benefit
        sink.write([record])
        sink.flush()
        db = sink.warehouse
        # dairy 258 and vegetables 150 of 408 goods: 63.2 and 36.8 cents of the benefit.
        assert db.query("SELECT product_group, amount_cents FROM receipt_groups ORDER BY 1") == [
            ("dairy", 258 - 63),
            ("vegetables", 150 - 37),
        ]
        (month,) = read_month(db, "2026-11", default_product_data=True)
        assert dict(month.groups or {}) == {"dairy": 195, "vegetables": 113}
        assert month.spend_cents == 288 + 20 == sum(dict(month.groups or {}).values())
    finally:
        sink.close()
