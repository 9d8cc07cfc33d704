//! `Checkout::accepts`: the reference validation (`receiptflow.validation.validate`) narrowed to what
//! the fast path can decide for sure. It answers `true` only when the Python core would accept the
//! checkout; anything it is not sure of (non-ASCII text, out-of-range numbers, any rule broken) is
//! `false`, and the record goes the Python way, which gives the dead-letter reason.

use crate::checkout::{
    Checkout, Line, BENEFIT, CANCEL_RECEIPT, DEPOSIT, DEPOSIT_REFUND, DISCOUNT, REFUND_RECEIPT, RETURN, SALE, VOID,
};

const MAX_TOTAL_CENTS: i128 = 10_000_000;
const MAX_LINES: usize = 2_000;
const MAX_QUANTITY: f64 = 100_000.0;
const MAX_STRING_CHARS: usize = 128;
const MAX_FUTURE_MS: i64 = 10 * 60 * 1000;
const EARLIEST_EVENT_MS: i64 = 946_684_800_000; // 2000-01-01T00:00:00Z
const MAX_OFFSET_MINUTES: i32 = 18 * 60;

/// `check_text` for the texts the fast path takes: printable ASCII, at most 128 characters, and
/// (when required) not blank. Anything else may be fine, but the Python core decides.
fn text_ok(s: &str, required: bool) -> bool {
    s.len() <= MAX_STRING_CHARS
        && s.bytes().all(|b| (0x20..0x7F).contains(&b))
        && (!required || s.bytes().any(|b| b != b' '))
}

fn line_ok(l: &Line<'_>) -> bool {
    let (amount, qty, kind) = (i128::from(l.amount_cents), l.quantity, l.kind);
    if l.unit_price_cents < 0 || amount.abs() > MAX_TOTAL_CENTS || i128::from(l.unit_price_cents) > MAX_TOTAL_CENTS {
        return false;
    }
    if qty.is_nan() || qty.abs() > MAX_QUANTITY {
        return false; // also NaN
    }
    if matches!(l.ref_line_no, Some(r) if r <= 0) {
        return false;
    }
    match kind {
        SALE => amount >= 0 && (qty > 0.0 || (qty == 0.0 && amount == 0)),
        DEPOSIT => amount >= 0 && qty > 0.0,
        DISCOUNT | BENEFIT => amount <= 0 && qty >= 0.0,
        VOID => amount <= 0 && qty <= 0.0,
        RETURN | DEPOSIT_REFUND => amount <= 0 && qty < 0.0,
        _ => false,
    }
}

impl Checkout<'_> {
    /// True only when `receiptflow.validation.validate` accepts this checkout at `now_ms`.
    pub fn accepts(&self, now_ms: i64) -> bool {
        if self.payment_method == u8::MAX {
            return false;
        }
        for s in [self.receipt_id, self.chain, self.store_id, self.register_id] {
            if !text_ok(s, true) {
                return false;
            }
        }
        if matches!(self.card_id, Some(card) if !text_ok(card, true)) {
            return false;
        }
        let cur = self.currency.as_bytes();
        if cur.len() != 3 || !cur.iter().all(u8::is_ascii_uppercase) {
            return false;
        }
        if !(-MAX_OFFSET_MINUTES..=MAX_OFFSET_MINUTES).contains(&self.offset_minutes) {
            return false;
        }
        let total = i128::from(self.total_cents);
        match self.receipt_kind {
            REFUND_RECEIPT => match self.original_receipt_id {
                Some(o) if o != self.receipt_id && text_ok(o, true) && total <= 0 => {}
                _ => return false,
            },
            kind => {
                if self.original_receipt_id.is_some() || (kind == CANCEL_RECEIPT && total != 0) {
                    return false;
                }
                if total < 0 && self.lines.is_empty() {
                    return false;
                }
            }
        }
        if total.abs() > MAX_TOTAL_CENTS {
            return false;
        }
        if self.event_ms > now_ms.saturating_add(MAX_FUTURE_MS) || self.event_ms < EARLIEST_EVENT_MS {
            return false;
        }
        if self.lines.len() > MAX_LINES {
            return false;
        }
        let mut seen = std::collections::HashSet::with_capacity(self.lines.len());
        let mut line_sum: i128 = 0;
        for l in &self.lines {
            if l.line_no <= 0 || !seen.insert(l.line_no) {
                return false;
            }
            if !text_ok(l.sku, true) || !text_ok(l.product_group, true) || !line_ok(l) {
                return false;
            }
            line_sum += i128::from(l.amount_cents);
        }
        let mut adjusted: i128 = 0;
        for (_, code, amount) in &self.adjustments {
            let amount = i128::from(*amount);
            if !text_ok(code, false) || !(-MAX_TOTAL_CENTS..=0).contains(&amount) {
                return false;
            }
            adjusted += amount;
        }
        if !self.lines.is_empty() && line_sum + adjusted != total {
            return false;
        }
        if !self.payments.is_empty() {
            let paid: i128 = self.payments.iter().map(|p| i128::from(p.1)).sum();
            if paid != total || self.payments.iter().any(|p| i128::from(p.1).abs() > MAX_TOTAL_CENTS) {
                return false;
            }
        }
        true
    }
}
