//! The little of Avro the router's records need: a schema read from the `.avsc` JSON, a reader
//! of its binary form that refuses anything doubtful, and the writer primitives.
//!
//! The reader is strict on purpose: a value it is not sure to read exactly as fastavro does
//! (an `int` beyond 32 bits, a negative block count, invalid UTF-8, an index out of range) is an
//! error, and the caller then leaves the record to the Python reference path.

use std::collections::HashMap;

use serde_json::Value as Json;

#[derive(Debug, Clone, PartialEq)]
pub enum Schema {
    Null,
    Boolean,
    Int,
    Long,
    Double,
    String,
    Enum(Vec<String>),
    Array(Box<Schema>),
    Record(Vec<Field>),
    Union(Vec<Schema>),
    /// A type this crate does not handle (float, bytes, map, fixed): a schema using it is not for the fast path.
    Other(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub schema: Schema,
}

/// Parse an `.avsc` document; named types (records, enums) may be referred to by name later on.
pub fn parse(text: &str) -> Result<Schema, String> {
    let json: Json = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut named = HashMap::new();
    parse_json(&json, "", &mut named)
}

fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

fn parse_json(json: &Json, namespace: &str, named: &mut HashMap<String, Schema>) -> Result<Schema, String> {
    match json {
        Json::String(name) => Ok(match name.as_str() {
            "null" => Schema::Null,
            "boolean" => Schema::Boolean,
            "int" => Schema::Int,
            "long" => Schema::Long,
            "double" => Schema::Double,
            "string" => Schema::String,
            "float" | "bytes" => Schema::Other(name.clone()),
            other => named
                .get(&full_name(other, namespace))
                .or_else(|| named.get(other))
                .cloned()
                .ok_or_else(|| format!("unknown type {other:?}"))?,
        }),
        Json::Array(branches) => Ok(Schema::Union(
            branches
                .iter()
                .map(|b| parse_json(b, namespace, named))
                .collect::<Result<_, _>>()?,
        )),
        Json::Object(obj) => {
            let kind = obj.get("type").ok_or("a type without \"type\"")?;
            let ns = obj
                .get("namespace")
                .and_then(Json::as_str)
                .unwrap_or(namespace)
                .to_string();
            match kind.as_str() {
                Some("record") => {
                    let name = obj
                        .get("name")
                        .and_then(Json::as_str)
                        .ok_or("a record without a name")?;
                    let mut fields = Vec::new();
                    for f in obj
                        .get("fields")
                        .and_then(Json::as_array)
                        .ok_or("a record without fields")?
                    {
                        let fname = f.get("name").and_then(Json::as_str).ok_or("a field without a name")?;
                        let ftype = f.get("type").ok_or("a field without a type")?;
                        fields.push(Field {
                            name: fname.to_string(),
                            schema: parse_json(ftype, &ns, named)?,
                        });
                    }
                    let schema = Schema::Record(fields);
                    named.insert(full_name(name, &ns), schema.clone());
                    Ok(schema)
                }
                Some("enum") => {
                    let name = obj.get("name").and_then(Json::as_str).ok_or("an enum without a name")?;
                    let symbols = obj
                        .get("symbols")
                        .and_then(Json::as_array)
                        .ok_or("an enum without symbols")?
                        .iter()
                        .map(|s| s.as_str().map(str::to_string).ok_or("a symbol that is not a string"))
                        .collect::<Result<Vec<_>, _>>()?;
                    let schema = Schema::Enum(symbols);
                    named.insert(full_name(name, &ns), schema.clone());
                    Ok(schema)
                }
                Some("array") => Ok(Schema::Array(Box::new(parse_json(
                    obj.get("items").ok_or("an array without items")?,
                    &ns,
                    named,
                )?))),
                Some("map") | Some("fixed") => Ok(Schema::Other(kind.as_str().unwrap_or("").to_string())),
                // A primitive with attributes, e.g. {"type": "long", "logicalType": "timestamp-millis"}:
                // the binary layout is the primitive's (the logical type is the callers' business).
                Some(_) => parse_json(kind, &ns, named),
                None => parse_json(kind, &ns, named),
            }
        }
        _ => Err(format!("not a schema: {json}")),
    }
}

/// A cursor over an Avro body that refuses what it cannot read exactly.
pub struct Reader<'a> {
    pub data: &'a [u8],
    pub pos: usize,
}

pub type Read<T> = Result<T, ()>;

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8], pos: usize) -> Self {
        Reader { data, pos }
    }

    pub fn long(&mut self) -> Read<i64> {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *self.data.get(self.pos).ok_or(())?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(()); // more than 64 bits
            }
            n |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(());
            }
        }
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    pub fn int(&mut self) -> Read<i32> {
        i32::try_from(self.long()?).map_err(|_| ())
    }

    pub fn double(&mut self) -> Read<f64> {
        let bytes = self.data.get(self.pos..self.pos + 8).ok_or(())?;
        self.pos += 8;
        Ok(f64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
    }

    pub fn string(&mut self) -> Read<&'a str> {
        let len = usize::try_from(self.long()?).map_err(|_| ())?;
        let end = self.pos.checked_add(len).ok_or(())?;
        let bytes = self.data.get(self.pos..end).ok_or(())?;
        self.pos = end;
        std::str::from_utf8(bytes).map_err(|_| ())
    }

    /// The item count of the next array block: 0 ends the array; negative counts (with a byte size) are refused.
    pub fn block(&mut self) -> Read<usize> {
        usize::try_from(self.long()?).map_err(|_| ())
    }

    pub fn at_end(&self) -> bool {
        self.pos == self.data.len()
    }
}

pub fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n > 0x7F {
        out.push((n as u8 & 0x7F) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

pub fn write_double(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}
