//! The router's compiled fast path (`receiptflow.processors.fast_path` selects and wraps it).
//!
//! `Router.decode` reads a framed checkout (Confluent wire format, Avro body) and says whether it is
//! valid for sure, with the facts the Python side needs for dedup, policy and consent;
//! `Router.route` then writes the routed records' bytes: the customer purchase, the marketing
//! purchase when consent allows, the analytics basket. Consent state, dedup and transactions stay in
//! Python. Both answer `None` for anything they are not sure of, and the Python core, which is the
//! reference, takes the record.

mod avro;
mod checkout;
mod outputs;
mod split;
mod validate;

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sha2::Sha256;

use checkout::{Checkout, CheckoutReader, DEPOSIT, DEPOSIT_REFUND};
use outputs::{group_totals, key_period, write, Basket, Consent, Purchase, V};

type HmacSha256 = Hmac<Sha256>;
/// The customer purchase, the marketing purchase or None, the analytics basket or None.
type Routed<'py> = (
    Bound<'py, PyBytes>,
    Option<Bound<'py, PyBytes>>,
    Option<Bound<'py, PyBytes>>,
);
const HEADER: usize = 5;
const BASKET_ID_HEX: usize = 32;

struct Writer {
    header: Vec<u8>,
    schema: avro::Schema,
}

/// One router worker's fast path, built from the schemas of its codec and its analytics key.
#[pyclass(module = "receiptflow_fast")]
struct Router {
    /// Checkout readers by schema id, each with whether its `lines` may be spliced into `items`.
    readers: HashMap<u32, (CheckoutReader, bool)>,
    purchase: Writer,
    basket: Option<Writer>,
    key: Option<Vec<u8>>,
    period_keys: Mutex<HashMap<String, HmacSha256>>,
}

fn schema(text: &str, what: &str) -> PyResult<avro::Schema> {
    avro::parse(text).map_err(|e| PyValueError::new_err(format!("{what}: {e}")))
}

impl Router {
    fn read<'a>(&self, value: &'a [u8]) -> Option<(Checkout<'a>, bool)> {
        if value.len() < HEADER || value[0] != 0 {
            return None;
        }
        let id = u32::from_be_bytes(value[1..HEADER].try_into().ok()?);
        let (reader, splice) = self.readers.get(&id)?;
        Some((reader.read(value, HEADER).ok()?, *splice))
    }

    /// Write a receipt with every optional part once, so a field of the output schemas that has no
    /// value in the mapping is found at start-up, not on the first receipt.
    fn check(&self) -> Result<(), String> {
        let line = checkout::Line {
            line_no: 1,
            sku: "s",
            product_group: "g",
            quantity: 1.0,
            unit_price_cents: 1,
            amount_cents: 1,
            kind: checkout::SALE,
            unit: 0,
            ref_line_no: Some(1),
        };
        let c = Checkout {
            receipt_id: "r",
            chain: "c",
            store_id: "s",
            register_id: "1",
            card_id: Some("card"),
            currency: "EUR",
            total_cents: 1,
            original_receipt_id: Some("o"),
            adjustments: vec![(0, "a", 0)],
            payments: vec![(0, 1)],
            lines: vec![line],
            ..Checkout::default()
        };
        let shares = split::line_shares(&c.lines, &c.adjustments);
        let groups = group_totals(&c.lines, &shares);
        let consent = Consent {
            product_data_marketing: true,
            electronic_marketing: true,
            known: true,
        };
        let p = Purchase {
            c: &c,
            granularity: outputs::ITEM,
            lines_raw: None,
            groups: &groups,
            deposit_cents: 0,
            adjustment_cents: 0,
            policy_version: "v",
            consent: &consent,
            processed_ms: 0,
        };
        write(&mut Vec::new(), &self.purchase.schema, V::Rec(&p)).map_err(|e| format!("purchase: {e}"))?;
        if let Some(w) = &self.basket {
            let b = Basket::new(&c, "b", "1970-01", &shares, (0, 0));
            write(&mut Vec::new(), &w.schema, V::Rec(&b)).map_err(|e| format!("analytics_basket: {e}"))?;
        }
        Ok(())
    }

    fn basket_id(&self, key: &[u8], period: &str, receipt_id: &str) -> Option<String> {
        let mut cache = self.period_keys.lock().ok()?;
        if cache.len() > 1024 {
            cache.clear();
        }
        if !cache.contains_key(period) {
            let mut outer = HmacSha256::new_from_slice(key).ok()?;
            outer.update(period.as_bytes());
            let period_key = outer.finalize().into_bytes();
            cache.insert(period.to_string(), HmacSha256::new_from_slice(&period_key).ok()?);
        }
        let mut mac = cache.get(period)?.clone();
        mac.update(receipt_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Some(hex[..BASKET_ID_HEX].to_string())
    }
}

#[pymethods]
impl Router {
    /// `checkouts`: (schema id, writer schema JSON, whether its lines may be spliced into purchase items);
    /// `purchase` and `basket`: (5-byte header, newest schema JSON); `key`: the analytics key (None: no baskets).
    /// Raises ValueError naming the first field the fast path cannot read or write.
    #[new]
    #[pyo3(signature = (checkouts, purchase, basket, key))]
    fn new(
        checkouts: Vec<(u32, String, bool)>,
        purchase: (Vec<u8>, String),
        basket: Option<(Vec<u8>, String)>,
        key: Option<Vec<u8>>,
    ) -> PyResult<Self> {
        let mut readers = HashMap::new();
        for (id, text, splice) in checkouts {
            let reader = CheckoutReader::new(&schema(&text, "checkout")?).map_err(PyValueError::new_err)?;
            readers.insert(id, (reader, splice));
        }
        let purchase = Writer {
            header: purchase.0,
            schema: schema(&purchase.1, "purchase")?,
        };
        let basket = match basket {
            Some((header, text)) => Some(Writer {
                header,
                schema: schema(&text, "analytics_basket")?,
            }),
            None => None,
        };
        let router = Router {
            readers,
            purchase,
            basket,
            key,
            period_keys: Mutex::new(HashMap::new()),
        };
        router.check().map_err(PyValueError::new_err)?;
        Ok(router)
    }

    /// (receipt id, chain, store id, card id or None, event time in ms since the epoch, UTC offset in
    /// minutes) of a checkout valid at `now_ms`; None when the Python core must decide.
    fn decode(&self, value: &[u8], now_ms: i64) -> Option<(String, String, String, Option<String>, i64, i32)> {
        let (c, _) = self.read(value)?;
        if !c.accepts(now_ms) {
            return None;
        }
        Some((
            c.receipt_id.to_string(),
            c.chain.to_string(),
            c.store_id.to_string(),
            c.card_id.map(str::to_string),
            c.event_ms,
            c.offset_minutes,
        ))
    }

    /// The routed records of a checkout `decode` accepted: (customer, marketing or None, basket or None).
    /// `level` and `marketing_level` are granularity ranks (0 item, 1 product group, 2 receipt);
    /// the marketing record is the customer's own bytes when the levels are the same. None when a
    /// record cannot be written (the Python core then routes the checkout).
    #[pyo3(signature = (value, level, marketing_level, policy_version, consent, processed_ms))]
    #[allow(clippy::too_many_arguments)]
    fn route<'py>(
        &self,
        py: Python<'py>,
        value: &[u8],
        level: u8,
        marketing_level: Option<u8>,
        policy_version: &str,
        consent: (bool, bool, bool),
        processed_ms: i64,
    ) -> Option<Routed<'py>> {
        if level > outputs::RECEIPT || marketing_level.is_some_and(|m| m > outputs::RECEIPT) {
            return None;
        }
        let (c, splice) = self.read(value)?;
        let shares = split::line_shares(&c.lines, &c.adjustments);
        let groups = group_totals(&c.lines, &shares);
        let consent = Consent {
            product_data_marketing: consent.0,
            electronic_marketing: consent.1,
            known: consent.2,
        };
        let lines_raw = if splice { Some(&value[c.lines_at..]) } else { None };
        let deposit_cents = c
            .lines
            .iter()
            .filter(|l| l.kind == DEPOSIT || l.kind == DEPOSIT_REFUND)
            .map(|l| l.amount_cents)
            .sum();
        let adjustment_cents = c.adjustments.iter().map(|a| a.2).sum();
        let encode = |granularity: u8| -> Option<Vec<u8>> {
            let p = Purchase {
                c: &c,
                granularity,
                lines_raw,
                groups: &groups,
                deposit_cents,
                adjustment_cents,
                policy_version,
                consent: &consent,
                processed_ms,
            };
            let mut out = Vec::with_capacity(value.len() + 128);
            out.extend_from_slice(&self.purchase.header);
            write(&mut out, &self.purchase.schema, V::Rec(&p)).ok()?;
            Some(out)
        };
        let customer = PyBytes::new(py, &encode(level)?);
        let marketing = match marketing_level {
            None => None,
            Some(m) if m == level => Some(customer.clone()),
            Some(m) => Some(PyBytes::new(py, &encode(m)?)),
        };
        let basket = match (&self.basket, &self.key) {
            (Some(w), Some(key)) if !c.lines.is_empty() => {
                let period = key_period(c.event_ms);
                let id = self.basket_id(key, &period, c.receipt_id)?;
                let b = Basket::new(&c, &id, &period, &shares, (deposit_cents, adjustment_cents));
                let mut out = Vec::with_capacity(value.len());
                out.extend_from_slice(&w.header);
                write(&mut out, &w.schema, V::Rec(&b)).ok()?;
                Some(PyBytes::new(py, &out))
            }
            _ => None,
        };
        Some((customer, marketing, basket))
    }
}

#[pymodule]
fn receiptflow_fast(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Router>()?;
    Ok(())
}
