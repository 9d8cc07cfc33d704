//! A checkout read from its Avro body.
//!
//! The reader is compiled from the writer's `.avsc` (fields by name, so a new writer version with
//! the same fields in another order still reads); the fields the newest checkout schema adds with
//! defaults read as those defaults, as Avro schema resolution gives them to the Python core.
//!
//! Whether a checkout read here is valid for sure is decided in `validate.rs`.

use crate::avro::{Reader, Schema};

pub const LINE_KINDS: [&str; 7] = [
    "SALE",
    "RETURN",
    "DEPOSIT",
    "DEPOSIT_REFUND",
    "DISCOUNT",
    "BENEFIT",
    "VOID",
];
pub const UNITS: [&str; 3] = ["PIECE", "KG", "L"];
pub const RECEIPT_KINDS: [&str; 3] = ["SALE", "REFUND", "CANCEL"];
pub const PAYMENT_METHODS: [&str; 6] = ["CARD", "CASH", "MOBILE", "GIFT_CARD", "INVOICE", "OTHER"];
const ADJUSTMENT_KINDS: [&str; 2] = ["DISCOUNT", "BENEFIT"];

pub const SALE: u8 = 0;
pub const RETURN: u8 = 1;
pub const DEPOSIT: u8 = 2;
pub const DEPOSIT_REFUND: u8 = 3;
pub const DISCOUNT: u8 = 4;
pub const BENEFIT: u8 = 5;
pub const VOID: u8 = 6;
pub const REFUND_RECEIPT: u8 = 1;
pub const CANCEL_RECEIPT: u8 = 2;

#[derive(Debug, Clone)]
pub struct Line<'a> {
    pub line_no: i32,
    pub sku: &'a str,
    pub product_group: &'a str,
    pub quantity: f64,
    pub unit_price_cents: i64,
    pub amount_cents: i64,
    pub kind: u8,
    pub unit: u8,
    pub ref_line_no: Option<i32>,
}

#[derive(Debug, Default)]
pub struct Checkout<'a> {
    pub receipt_id: &'a str,
    pub chain: &'a str,
    pub store_id: &'a str,
    pub register_id: &'a str,
    pub card_id: Option<&'a str>,
    pub event_ms: i64,
    pub offset_minutes: i32,
    pub payment_method: u8,
    pub currency: &'a str,
    pub total_cents: i64,
    pub receipt_kind: u8,
    pub original_receipt_id: Option<&'a str>,
    pub adjustments: Vec<(u8, &'a str, i64)>,
    pub payments: Vec<(u8, i64)>,
    pub lines: Vec<Line<'a>>,
    /// Where the encoded `lines` array starts in the body (it is the last field when splicing is allowed).
    pub lines_at: usize,
}

/// How one field of a writer schema is read: which value it is, and the writer's enum symbols mapped to ours.
#[derive(Debug, Clone)]
enum Slot {
    ReceiptId,
    Chain,
    StoreId,
    RegisterId,
    CardId(bool), // null is branch 0
    EventTime,
    Offset,
    PaymentMethod(Vec<u8>),
    Currency,
    Total,
    ReceiptKind(Vec<u8>),
    OriginalReceiptId(bool),
    Adjustments(Vec<u8>),
    Payments(Vec<u8>),
    Lines(Vec<LineSlot>),
}

#[derive(Debug, Clone)]
enum LineSlot {
    LineNo,
    Sku,
    ProductGroup,
    Quantity,
    UnitPrice,
    Amount,
    Kind(Vec<u8>),
    Unit(Vec<u8>),
    RefLineNo(bool),
}

/// The reader of one checkout writer schema.
#[derive(Debug, Clone)]
pub struct CheckoutReader {
    slots: Vec<Slot>,
}

fn symbols(schema: &Schema, ours: &[&str]) -> Result<Vec<u8>, String> {
    match schema {
        Schema::Enum(symbols) => symbols
            .iter()
            .map(|s| {
                ours.iter()
                    .position(|o| o == s)
                    .map(|i| i as u8)
                    .ok_or(format!("unknown symbol {s}"))
            })
            .collect(),
        other => Err(format!("expected an enum, got {other:?}")),
    }
}

fn nullable(schema: &Schema, value: Schema) -> Result<bool, String> {
    match schema {
        Schema::Union(b) if b.len() == 2 && b[0] == Schema::Null && b[1] == value => Ok(true),
        Schema::Union(b) if b.len() == 2 && b[1] == Schema::Null && b[0] == value => Ok(false),
        other => Err(format!("expected a nullable {value:?}, got {other:?}")),
    }
}

fn expect(schema: &Schema, want: Schema) -> Result<(), String> {
    if *schema == want {
        Ok(())
    } else {
        Err(format!("expected {want:?}, got {schema:?}"))
    }
}

fn record_fields(schema: &Schema) -> Result<&[crate::avro::Field], String> {
    match schema {
        Schema::Array(items) => match items.as_ref() {
            Schema::Record(fields) => Ok(fields),
            other => Err(format!("expected an array of records, got {other:?}")),
        },
        other => Err(format!("expected an array, got {other:?}")),
    }
}

impl CheckoutReader {
    /// Compile the reader of a checkout writer schema; an error names what the fast path cannot read.
    pub fn new(writer: &Schema) -> Result<Self, String> {
        let Schema::Record(fields) = writer else {
            return Err("the checkout schema is not a record".into());
        };
        let mut slots = Vec::new();
        for f in fields {
            let s = &f.schema;
            let slot = match f.name.as_str() {
                "receipt_id" => expect(s, Schema::String).map(|_| Slot::ReceiptId),
                "chain" => expect(s, Schema::String).map(|_| Slot::Chain),
                "store_id" => expect(s, Schema::String).map(|_| Slot::StoreId),
                "register_id" => expect(s, Schema::String).map(|_| Slot::RegisterId),
                "card_id" => nullable(s, Schema::String).map(Slot::CardId),
                "event_time" => expect(s, Schema::Long).map(|_| Slot::EventTime),
                "event_tz_offset_minutes" => expect(s, Schema::Int).map(|_| Slot::Offset),
                "payment_method" => symbols(s, &PAYMENT_METHODS).map(Slot::PaymentMethod),
                "currency" => expect(s, Schema::String).map(|_| Slot::Currency),
                "total_cents" => expect(s, Schema::Long).map(|_| Slot::Total),
                "receipt_kind" => symbols(s, &RECEIPT_KINDS).map(Slot::ReceiptKind),
                "original_receipt_id" => nullable(s, Schema::String).map(Slot::OriginalReceiptId),
                "adjustments" => adjustments(s).map(Slot::Adjustments),
                "payments" => payments(s).map(Slot::Payments),
                "lines" => lines(s).map(Slot::Lines),
                other => Err(format!("unknown field {other}")),
            }
            .map_err(|e| format!("checkout.{}: {e}", f.name))?;
            slots.push(slot);
        }
        for required in [
            "receipt_id",
            "chain",
            "store_id",
            "register_id",
            "event_time",
            "payment_method",
            "total_cents",
        ] {
            if !fields.iter().any(|f| f.name == required) {
                return Err(format!("checkout has no {required}"));
            }
        }
        Ok(CheckoutReader { slots })
    }

    /// Read a body; `Err` for anything that is not read exactly as the Python core reads it.
    pub fn read<'a>(&self, body: &'a [u8], start: usize) -> Result<Checkout<'a>, ()> {
        let mut r = Reader::new(body, start);
        let mut c = Checkout {
            currency: "EUR",
            ..Checkout::default()
        };
        c.payment_method = u8::MAX;
        for slot in &self.slots {
            match slot {
                Slot::ReceiptId => c.receipt_id = r.string()?,
                Slot::Chain => c.chain = r.string()?,
                Slot::StoreId => c.store_id = r.string()?,
                Slot::RegisterId => c.register_id = r.string()?,
                Slot::CardId(null_first) => c.card_id = nullable_string(&mut r, *null_first)?,
                Slot::EventTime => c.event_ms = r.long()?,
                Slot::Offset => c.offset_minutes = r.int()?,
                Slot::PaymentMethod(map) => c.payment_method = enum_index(&mut r, map)?,
                Slot::Currency => c.currency = r.string()?,
                Slot::Total => c.total_cents = r.long()?,
                Slot::ReceiptKind(map) => c.receipt_kind = enum_index(&mut r, map)?,
                Slot::OriginalReceiptId(null_first) => c.original_receipt_id = nullable_string(&mut r, *null_first)?,
                Slot::Adjustments(kinds) => {
                    read_array(&mut r, |r| {
                        let (kind, code, amount) = (enum_index(r, kinds)?, r.string()?, r.long()?);
                        c.adjustments.push((kind, code, amount));
                        Ok(())
                    })?;
                }
                Slot::Payments(methods) => {
                    read_array(&mut r, |r| {
                        let (method, amount) = (enum_index(r, methods)?, r.long()?);
                        c.payments.push((method, amount));
                        Ok(())
                    })?;
                }
                Slot::Lines(line_slots) => {
                    c.lines_at = r.pos;
                    read_array(&mut r, |r| {
                        c.lines.push(read_line(r, line_slots)?);
                        Ok(())
                    })?;
                }
            }
        }
        if !r.at_end() {
            return Err(());
        }
        Ok(c)
    }
}

fn adjustments(s: &Schema) -> Result<Vec<u8>, String> {
    let f = record_fields(s)?;
    if f.len() != 3 || f[0].name != "kind" || f[1].name != "code" || f[2].name != "amount_cents" {
        return Err("adjustments are not (kind, code, amount_cents)".into());
    }
    expect(&f[1].schema, Schema::String)?;
    expect(&f[2].schema, Schema::Long)?;
    symbols(&f[0].schema, &ADJUSTMENT_KINDS)
}

fn payments(s: &Schema) -> Result<Vec<u8>, String> {
    let f = record_fields(s)?;
    if f.len() != 2 || f[0].name != "method" || f[1].name != "amount_cents" {
        return Err("payments are not (method, amount_cents)".into());
    }
    expect(&f[1].schema, Schema::Long)?;
    symbols(&f[0].schema, &PAYMENT_METHODS)
}

fn lines(s: &Schema) -> Result<Vec<LineSlot>, String> {
    let mut out = Vec::new();
    for f in record_fields(s)? {
        let s = &f.schema;
        out.push(
            match f.name.as_str() {
                "line_no" => expect(s, Schema::Int).map(|_| LineSlot::LineNo),
                "sku" => expect(s, Schema::String).map(|_| LineSlot::Sku),
                "product_group" => expect(s, Schema::String).map(|_| LineSlot::ProductGroup),
                "quantity" => expect(s, Schema::Double).map(|_| LineSlot::Quantity),
                "unit_price_cents" => expect(s, Schema::Long).map(|_| LineSlot::UnitPrice),
                "amount_cents" => expect(s, Schema::Long).map(|_| LineSlot::Amount),
                "kind" => symbols(s, &LINE_KINDS).map(LineSlot::Kind),
                "unit" => symbols(s, &UNITS).map(LineSlot::Unit),
                "ref_line_no" => nullable(s, Schema::Int).map(LineSlot::RefLineNo),
                other => Err(format!("unknown field {other}")),
            }
            .map_err(|e| format!("lines.{}: {e}", f.name))?,
        );
    }
    for required in [
        "line_no",
        "sku",
        "product_group",
        "quantity",
        "unit_price_cents",
        "amount_cents",
    ] {
        if !record_fields(s)?.iter().any(|f| f.name == required) {
            return Err(format!("lines have no {required}"));
        }
    }
    Ok(out)
}

fn read_line<'a>(r: &mut Reader<'a>, slots: &[LineSlot]) -> Result<Line<'a>, ()> {
    let mut l = Line {
        line_no: 0,
        sku: "",
        product_group: "",
        quantity: 0.0,
        unit_price_cents: 0,
        amount_cents: 0,
        kind: SALE,
        unit: 0,
        ref_line_no: None,
    };
    for slot in slots {
        match slot {
            LineSlot::LineNo => l.line_no = r.int()?,
            LineSlot::Sku => l.sku = r.string()?,
            LineSlot::ProductGroup => l.product_group = r.string()?,
            LineSlot::Quantity => l.quantity = r.double()?,
            LineSlot::UnitPrice => l.unit_price_cents = r.long()?,
            LineSlot::Amount => l.amount_cents = r.long()?,
            LineSlot::Kind(map) => l.kind = enum_index(r, map)?,
            LineSlot::Unit(map) => l.unit = enum_index(r, map)?,
            LineSlot::RefLineNo(null_first) => {
                let branch = r.long()?;
                let is_null = (branch == 0) == *null_first;
                if branch != 0 && branch != 1 {
                    return Err(());
                }
                l.ref_line_no = if is_null { None } else { Some(r.int()?) };
            }
        }
    }
    Ok(l)
}

fn nullable_string<'a>(r: &mut Reader<'a>, null_first: bool) -> Result<Option<&'a str>, ()> {
    match r.long()? {
        b @ (0 | 1) if (b == 0) == null_first => Ok(None),
        0 | 1 => Ok(Some(r.string()?)),
        _ => Err(()),
    }
}

fn enum_index(r: &mut Reader<'_>, map: &[u8]) -> Result<u8, ()> {
    let i = usize::try_from(r.long()?).map_err(|_| ())?;
    map.get(i).copied().ok_or(())
}

fn read_array<'a, F: FnMut(&mut Reader<'a>) -> Result<(), ()>>(r: &mut Reader<'a>, mut item: F) -> Result<(), ()> {
    loop {
        let n = r.block()?;
        if n == 0 {
            return Ok(());
        }
        for _ in 0..n {
            item(r)?;
        }
    }
}
