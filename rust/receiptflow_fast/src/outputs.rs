//! The records a valid checkout is routed to, written field by field in the order of their `.avsc`.
//!
//! Which value goes into which field is said once, by field name, in the `Src::get` of each
//! record below (`Purchase`, `Item`, `Group`, `Consent`, `Basket`, `BasketLine`). The order, the
//! types, unions and enum symbols come from the newest schema handed in at start-up, so a schema
//! change that only reorders or adds defaulted fields the mapping knows needs no change here; a
//! field the mapping does not know makes the write fail, and the record takes the Python path.
//! The semantics are those of `receiptflow.processors.core.route` and `receiptflow.policy`.

use crate::avro::{write_double, write_long, write_str, Schema};
use crate::checkout::{
    Checkout, Line, DEPOSIT, DEPOSIT_REFUND, LINE_KINDS, PAYMENT_METHODS, RECEIPT_KINDS, RETURN, SALE, UNITS, VOID,
};

pub const GRANULARITIES: [&str; 3] = ["ITEM", "PRODUCT_GROUP", "RECEIPT"];
pub const ITEM: u8 = 0;
pub const RECEIPT: u8 = 2;

/// A value for one field.
pub enum V<'a> {
    Null,
    Bool(bool),
    Long(i64),
    Double(f64),
    Str(&'a str),
    /// An encoded array, written as it is (the checkout's own `lines` bytes).
    Raw(&'a [u8]),
    List(Vec<&'a dyn Src>),
    Rec(&'a dyn Src),
}

/// A record's values by field name; `None` for a field this mapping does not know.
pub trait Src {
    fn get(&self, name: &str) -> Option<V<'_>>;
}

pub type Write = Result<(), String>;

fn fits(schema: &Schema, v: &V<'_>) -> bool {
    matches!(
        (schema, v),
        (Schema::Null, V::Null)
            | (Schema::Boolean, V::Bool(_))
            | (Schema::Int | Schema::Long, V::Long(_))
            | (Schema::Double, V::Double(_))
            | (Schema::String | Schema::Enum(_), V::Str(_))
            | (Schema::Array(_), V::Raw(_) | V::List(_))
            | (Schema::Record(_), V::Rec(_))
    )
}

/// Write `v` as `schema` says, as fastavro's schemaless writer does.
pub fn write(out: &mut Vec<u8>, schema: &Schema, v: V<'_>) -> Write {
    match (schema, v) {
        (Schema::Null, V::Null) => {}
        (Schema::Boolean, V::Bool(b)) => out.push(u8::from(b)),
        (Schema::Int, V::Long(n)) => {
            i32::try_from(n).map_err(|_| format!("{n} is not an int"))?;
            write_long(out, n);
        }
        (Schema::Long, V::Long(n)) => write_long(out, n),
        (Schema::Double, V::Double(x)) => write_double(out, x),
        (Schema::String, V::Str(s)) => write_str(out, s),
        (Schema::Enum(symbols), V::Str(s)) => {
            let i = symbols
                .iter()
                .position(|x| x == s)
                .ok_or_else(|| format!("{s} is not a symbol"))?;
            write_long(out, i as i64);
        }
        (Schema::Union(branches), v) => {
            // The first branch that takes the value, as fastavro picks it.
            let i = branches
                .iter()
                .position(|b| fits(b, &v))
                .ok_or("no union branch takes the value")?;
            write_long(out, i as i64);
            write(out, &branches[i], v)?;
        }
        (Schema::Array(_), V::Raw(bytes)) => out.extend_from_slice(bytes),
        (Schema::Array(items), V::List(list)) => {
            if !list.is_empty() {
                write_long(out, list.len() as i64);
                for item in list {
                    write(out, items, V::Rec(item))?;
                }
            }
            out.push(0);
        }
        (Schema::Record(fields), V::Rec(src)) => {
            for f in fields {
                let v = src
                    .get(&f.name)
                    .ok_or_else(|| format!("no value for field {}", f.name))?;
                write(out, &f.schema, v).map_err(|e| format!("{}: {e}", f.name))?;
            }
        }
        (schema, _) => return Err(format!("a value that does not fit {schema:?}")),
    }
    Ok(())
}

fn opt(s: Option<&str>) -> V<'_> {
    s.map_or(V::Null, V::Str)
}

impl Src for Line<'_> {
    fn get(&self, name: &str) -> Option<V<'_>> {
        Some(match name {
            "line_no" => V::Long(i64::from(self.line_no)),
            "sku" => V::Str(self.sku),
            "product_group" => V::Str(self.product_group),
            "quantity" => V::Double(self.quantity),
            "unit_price_cents" => V::Long(self.unit_price_cents),
            "amount_cents" => V::Long(self.amount_cents),
            "kind" => V::Str(LINE_KINDS[usize::from(self.kind)]),
            "unit" => V::Str(UNITS[usize::from(self.unit)]),
            "ref_line_no" => self.ref_line_no.map_or(V::Null, |r| V::Long(i64::from(r))),
            _ => return None,
        })
    }
}

/// A product group's net total (`receiptflow.policy.group_totals`).
pub struct Group<'a> {
    pub product_group: &'a str,
    pub quantity: f64,
    pub amount_cents: i64,
    pub lines: i64,
}

impl Src for Group<'_> {
    fn get(&self, name: &str) -> Option<V<'_>> {
        Some(match name {
            "product_group" => V::Str(self.product_group),
            "quantity" => V::Double(self.quantity),
            "amount_cents" => V::Long(self.amount_cents),
            "lines" => V::Long(self.lines),
            _ => return None,
        })
    }
}

/// Net totals by product group, sorted by name: deposits in no group, quantities of goods only,
/// amounts net of each line's share of the receipt-level adjustments (`shares`, aligned with `lines`).
pub fn group_totals<'a>(lines: &[Line<'a>], shares: &[i64]) -> Vec<Group<'a>> {
    let mut groups: Vec<Group<'a>> = Vec::new();
    for (l, share) in lines.iter().zip(shares) {
        if l.kind == DEPOSIT || l.kind == DEPOSIT_REFUND {
            continue;
        }
        // Goods change hands on these; a discount line's quantity is not more of the product.
        let qty = if matches!(l.kind, SALE | RETURN | VOID) {
            l.quantity
        } else {
            0.0
        };
        let amount = l.amount_cents + share;
        match groups.iter_mut().find(|g| g.product_group == l.product_group) {
            Some(g) => {
                g.quantity += qty;
                g.amount_cents += amount;
                g.lines += 1;
            }
            None => groups.push(Group {
                product_group: l.product_group,
                quantity: qty,
                amount_cents: amount,
                lines: 1,
            }),
        }
    }
    groups.sort_by(|a, b| a.product_group.cmp(b.product_group));
    groups
}

pub struct Consent {
    pub product_data_marketing: bool,
    pub electronic_marketing: bool,
    pub known: bool,
}

impl Src for Consent {
    fn get(&self, name: &str) -> Option<V<'_>> {
        Some(match name {
            "product_data_marketing" => V::Bool(self.product_data_marketing),
            "electronic_marketing" => V::Bool(self.electronic_marketing),
            "known" => V::Bool(self.known),
            _ => return None,
        })
    }
}

/// A purchase (`core.route`): the checkout cut to `granularity`, with its lineage.
pub struct Purchase<'a> {
    pub c: &'a Checkout<'a>,
    pub granularity: u8,
    /// The checkout's encoded `lines` array, when the purchase may carry it as its `items`.
    pub lines_raw: Option<&'a [u8]>,
    pub groups: &'a [Group<'a>],
    pub deposit_cents: i64,
    pub adjustment_cents: i64,
    pub policy_version: &'a str,
    pub consent: &'a Consent,
    pub processed_ms: i64,
}

impl Src for Purchase<'_> {
    fn get(&self, name: &str) -> Option<V<'_>> {
        let c = self.c;
        Some(match name {
            "receipt_id" => V::Str(c.receipt_id),
            "chain" => V::Str(c.chain),
            "store_id" => V::Str(c.store_id),
            "register_id" => V::Str(c.register_id),
            "card_id" => opt(c.card_id),
            "event_time" => V::Long(c.event_ms),
            "event_tz_offset_minutes" => V::Long(i64::from(c.offset_minutes)),
            "payment_method" => V::Str(PAYMENT_METHODS[usize::from(c.payment_method)]),
            "currency" => V::Str(c.currency),
            "total_cents" => V::Long(c.total_cents),
            "receipt_kind" => V::Str(RECEIPT_KINDS[usize::from(c.receipt_kind)]),
            "original_receipt_id" => opt(c.original_receipt_id),
            "deposit_cents" => V::Long(self.deposit_cents),
            "adjustment_cents" => V::Long(self.adjustment_cents),
            "granularity" => V::Str(GRANULARITIES[usize::from(self.granularity)]),
            "items" => match (self.granularity, self.lines_raw) {
                (ITEM, Some(raw)) if !c.lines.is_empty() => V::Raw(raw),
                (ITEM, _) => V::List(c.lines.iter().map(|l| l as &dyn Src).collect()),
                _ => V::List(Vec::new()),
            },
            "groups" if self.granularity == RECEIPT => V::List(Vec::new()),
            "groups" => V::List(self.groups.iter().map(|g| g as &dyn Src).collect()),
            "policy_version" => V::Str(self.policy_version),
            "consent" => V::Rec(self.consent),
            "processed_at" => V::Long(self.processed_ms),
            _ => return None,
        })
    }
}

/// A line of an analytics basket: what was sold, without the register's line number, with its
/// share of the receipt-level adjustments.
pub struct BasketLine<'a> {
    pub line: &'a Line<'a>,
    pub adjustment_cents: i64,
}

impl Src for BasketLine<'_> {
    fn get(&self, name: &str) -> Option<V<'_>> {
        let l = self.line;
        Some(match name {
            "sku" => V::Str(l.sku),
            "product_group" => V::Str(l.product_group),
            "quantity" => V::Double(l.quantity),
            "unit_price_cents" => V::Long(l.unit_price_cents),
            "amount_cents" => V::Long(l.amount_cents),
            "kind" => V::Str(LINE_KINDS[usize::from(l.kind)]),
            "unit" => V::Str(UNITS[usize::from(l.unit)]),
            "adjustment_cents" => V::Long(self.adjustment_cents),
            _ => return None,
        })
    }
}

/// The anonymous analytics record (`core.analytics_basket`).
pub struct Basket<'a> {
    pub c: &'a Checkout<'a>,
    pub basket_id: &'a str,
    pub key_period: &'a str,
    pub lines: Vec<BasketLine<'a>>,
    pub deposit_cents: i64,
    pub adjustment_cents: i64,
}

impl<'a> Basket<'a> {
    /// The basket of a checkout with lines, in the canonical order (group, SKU, amount, quantity,
    /// unit price, kind, unit, share; kinds and units compared by name, as the Python core does).
    pub fn new(
        c: &'a Checkout<'a>,
        basket_id: &'a str,
        key_period: &'a str,
        shares: &[i64],
        totals: (i64, i64),
    ) -> Self {
        let mut lines: Vec<BasketLine<'a>> = c
            .lines
            .iter()
            .zip(shares)
            .map(|(line, &adjustment_cents)| BasketLine { line, adjustment_cents })
            .collect();
        // Stable, like Python's sorted; quantities are never NaN here (validation refuses them).
        lines.sort_by(|a, b| {
            let (x, y) = (a.line, b.line);
            (x.product_group, x.sku, x.amount_cents)
                .cmp(&(y.product_group, y.sku, y.amount_cents))
                .then(x.quantity.partial_cmp(&y.quantity).unwrap_or(std::cmp::Ordering::Equal))
                .then(x.unit_price_cents.cmp(&y.unit_price_cents))
                .then(LINE_KINDS[usize::from(x.kind)].cmp(LINE_KINDS[usize::from(y.kind)]))
                .then(UNITS[usize::from(x.unit)].cmp(UNITS[usize::from(y.unit)]))
                .then(a.adjustment_cents.cmp(&b.adjustment_cents))
        });
        Basket {
            c,
            basket_id,
            key_period,
            lines,
            deposit_cents: totals.0,
            adjustment_cents: totals.1,
        }
    }
}

impl Src for Basket<'_> {
    fn get(&self, name: &str) -> Option<V<'_>> {
        let c = self.c;
        Some(match name {
            "basket_id" => V::Str(self.basket_id),
            "key_period" => V::Str(self.key_period),
            "chain" => V::Str(c.chain),
            "store_id" => V::Str(c.store_id),
            "event_hour" => V::Long(c.event_ms - c.event_ms.rem_euclid(3_600_000)),
            "event_tz_offset_minutes" => V::Long(i64::from(c.offset_minutes)),
            "payment_method" => V::Str(PAYMENT_METHODS[usize::from(c.payment_method)]),
            "currency" => V::Str(c.currency),
            "total_cents" => V::Long(c.total_cents),
            "receipt_kind" => V::Str(RECEIPT_KINDS[usize::from(c.receipt_kind)]),
            "deposit_cents" => V::Long(self.deposit_cents),
            "adjustment_cents" => V::Long(self.adjustment_cents),
            "lines" => V::List(self.lines.iter().map(|l| l as &dyn Src).collect()),
            _ => return None,
        })
    }
}

/// The rotation period of a sale: its month in UTC, `YYYY-MM` (`pseudonym.key_period`).
pub fn key_period(event_ms: i64) -> String {
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = event_ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}")
}
