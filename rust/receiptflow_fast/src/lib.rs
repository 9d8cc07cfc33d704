//! The router's compiled fast path (`receiptflow.processors.router.fast_path` selects and wraps it).
//!
//! `Router.handle` reads a framed checkout (Confluent wire format, Avro body) once: when it is valid
//! for sure, it hands the facts the Python side needs for dedup, policy and consent to a Python
//! callable, which answers with the routing decision (or with `None`: nothing to write), and then
//! writes the routed records' bytes from the same reading: the customer purchase, the marketing
//! purchase when consent allows, the analytics basket. Consent state, dedup and transactions stay in
//! Python. For anything it is not sure of it says why, and the Python core, which is the reference,
//! takes the record.
//!
//! `Router.decode` and `Router.route` are the older two-call form of the same (each reads the
//! checkout); they are kept so that older revisions' Python code runs on this build
//! (`benchmarks/compare_revisions.py`).

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
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyString};
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

/// Why `handle` left a checkout to the Python core before asking for a decision.
const UNFRAMED: &str = "unframed"; // no value, too short or not the magic byte
const UNKNOWN_SCHEMA: &str = "unknown_schema"; // not one of the checkout schema ids it reads
const UNREADABLE: &str = "unreadable"; // not read exactly as fastavro reads it (or not at all)
const UNSURE: &str = "unsure"; // read, but the Python validation may refuse it or want to look closer

impl Router {
    /// The checkout in `value` and whether its lines may be spliced; Err says why not.
    fn read<'a>(&self, value: &'a [u8]) -> Result<(Checkout<'a>, bool), &'static str> {
        if value.len() < HEADER || value[0] != 0 {
            return Err(UNFRAMED);
        }
        let id = u32::from_be_bytes(value[1..HEADER].try_into().map_err(|_| UNFRAMED)?);
        let (reader, splice) = self.readers.get(&id).ok_or(UNKNOWN_SCHEMA)?;
        let c = reader.read(value, HEADER).map_err(|()| UNREADABLE)?;
        Ok((c, *splice))
    }

    /// The routed records of `c` (read from `value`): (customer, marketing or None, basket or None);
    /// None when a record cannot be written.
    #[allow(clippy::too_many_arguments)]
    fn write_routed<'py>(
        &self,
        py: Python<'py>,
        value: &[u8],
        c: &Checkout<'_>,
        splice: bool,
        level: u8,
        marketing_level: Option<u8>,
        policy_version: &str,
        consent: &Consent,
        processed_ms: i64,
    ) -> Option<Routed<'py>> {
        if level > outputs::RECEIPT || marketing_level.is_some_and(|m| m > outputs::RECEIPT) {
            return None;
        }
        let shares = split::line_shares(&c.lines, &c.adjustments);
        let groups = group_totals(&c.lines, &shares);
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
                c,
                granularity,
                lines_raw,
                groups: &groups,
                deposit_cents,
                adjustment_cents,
                policy_version,
                consent,
                processed_ms,
            };
            let mut out = Vec::with_capacity(value.len() + 128);
            out.extend_from_slice(&self.purchase.header);
            write(&mut out, &self.purchase.schema, V::Rec(&p)).ok()?;
            Some(out)
        };
        let customer = encode(level)?;
        let marketing = match marketing_level {
            Some(m) if m != level => Some(encode(m)?),
            _ => None,
        };
        let basket = match (&self.basket, &self.key) {
            (Some(w), Some(key)) if !c.lines.is_empty() => {
                let period = key_period(c.event_ms);
                let id = self.basket_id(key, &period, c.receipt_id)?;
                let b = Basket::new(c, &id, &period, &shares, (deposit_cents, adjustment_cents));
                let mut out = Vec::with_capacity(value.len());
                out.extend_from_slice(&w.header);
                write(&mut out, &w.schema, V::Rec(&b)).ok()?;
                Some(out)
            }
            _ => None,
        };
        // Python objects only once every record is written.
        let customer = PyBytes::new(py, &customer);
        let marketing = match (marketing_level, marketing) {
            (None, _) => None,
            (Some(_), None) => Some(customer.clone()), // the same level: the customer's own bytes
            (Some(_), Some(m)) => Some(PyBytes::new(py, &m)),
        };
        Some((customer, marketing, basket.map(|b| PyBytes::new(py, &b))))
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

    /// One checkout, read once: `decide(receipt id, chain, store id, card id or None, event time in ms
    /// since the epoch, UTC offset in minutes)` is called when the checkout is valid at `now_ms` for
    /// sure, and answers None (nothing to write: a duplicate) or (level, marketing level or None,
    /// policy version, (product data marketing, electronic marketing, known), context); the routed
    /// records are then written from the same reading, with `now_ms` as their processing time.
    ///
    /// Returns a reason (str) when it left the checkout to the Python core without calling `decide`
    /// ("unframed", "unknown_schema", "unreadable", "unsure"); None when `decide` answered None;
    /// otherwise (context, customer, marketing or None, basket or None), where customer is None when
    /// a record could not be written (the Python core then routes the checkout on that decision).
    /// Levels are granularity ranks (0 item, 1 product group, 2 receipt); the marketing record is
    /// the customer's own bytes when the levels are the same. An exception of `decide` is raised.
    #[pyo3(signature = (value, now_ms, decide))]
    fn handle<'py>(
        &self,
        py: Python<'py>,
        value: &[u8],
        now_ms: i64,
        decide: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (c, splice) = match self.read(value) {
            Ok(read) => read,
            Err(why) => return Ok(PyString::intern(py, why).into_any()),
        };
        if !c.accepts(now_ms) {
            return Ok(PyString::intern(py, UNSURE).into_any());
        }
        let facts = (
            c.receipt_id,
            c.chain,
            c.store_id,
            c.card_id,
            c.event_ms,
            c.offset_minutes,
        );
        let decided = decide.call1(facts)?;
        if decided.is_none() {
            return Ok(decided);
        }
        #[allow(clippy::type_complexity)]
        let (level, marketing_level, policy_version, consent, context): (
            u8,
            Option<u8>,
            PyBackedStr,
            (bool, bool, bool),
            Bound<'py, PyAny>,
        ) = decided.extract()?;
        let consent = Consent {
            product_data_marketing: consent.0,
            electronic_marketing: consent.1,
            known: consent.2,
        };
        let routed = self.write_routed(
            py,
            value,
            &c,
            splice,
            level,
            marketing_level,
            &policy_version,
            &consent,
            now_ms,
        );
        let out = match routed {
            Some((customer, marketing, basket)) => (context, Some(customer), marketing, basket).into_pyobject(py)?,
            None => (
                context,
                None::<Bound<'py, PyBytes>>,
                None::<Bound<'py, PyBytes>>,
                None::<Bound<'py, PyBytes>>,
            )
                .into_pyobject(py)?,
        };
        Ok(out.into_any())
    }

    /// (receipt id, chain, store id, card id or None, event time in ms since the epoch, UTC offset in
    /// minutes) of a checkout valid at `now_ms`; None when the Python core must decide.
    /// The first half of the older two-call form (`handle` is the one-call form).
    fn decode(&self, value: &[u8], now_ms: i64) -> Option<(String, String, String, Option<String>, i64, i32)> {
        let (c, _) = self.read(value).ok()?;
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

    /// The routed records of a checkout `decode` accepted: (customer, marketing or None, basket or None),
    /// as `handle` writes them; None when a record cannot be written (the Python core then routes the
    /// checkout). The second half of the older two-call form: it reads the checkout again.
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
        let (c, splice) = self.read(value).ok()?;
        let consent = Consent {
            product_data_marketing: consent.0,
            electronic_marketing: consent.1,
            known: consent.2,
        };
        self.write_routed(
            py,
            value,
            &c,
            splice,
            level,
            marketing_level,
            policy_version,
            &consent,
            processed_ms,
        )
    }
}

#[pymodule]
fn receiptflow_fast(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Router>()?;
    Ok(())
}
