//! Strict JSON parsing: the whole input as UTF-8 JSON, no duplicate object keys, bounded nesting.
//!
//! serde_json keeps the last of duplicate keys; a server may read another one. A proxy that
//! decides on `"name"` while the server reads a different `"name"` is bypassed, so any object
//! with a repeated key (after unescaping: `"name"` and `"na\u006de"` are the same key) is refused.
use std::{cell::Cell, fmt};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value, map::Entry};

use super::{MAX_DEPTH_CAP, error::excerpt};

pub(super) enum StrictError {
    Parse(String),
    TooDeep(usize),
}

/// Parses `body` as exactly one JSON value (whitespace around it allowed, nothing else).
pub(super) fn parse(body: &[u8], max_depth: usize) -> Result<Value, StrictError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| StrictError::Parse(format!("body is not UTF-8: {e}")))?;
    let limit = max_depth.min(MAX_DEPTH_CAP);
    let too_deep = Cell::new(false);
    let seed = Seed {
        depth: 0,
        limit,
        too_deep: &too_deep,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if too_deep.get() => Err(StrictError::TooDeep(limit)),
        Err(e) => Err(StrictError::Parse(e.to_string())),
    }
}

/// Builds a `Value` at nesting `depth`. (With serde_json's `arbitrary_precision` feature numbers
/// would arrive as maps; the tests would catch that feature being switched on.)
#[derive(Clone, Copy)]
struct Seed<'a> {
    depth: usize,
    limit: usize,
    too_deep: &'a Cell<bool>,
}

impl<'a> Seed<'a> {
    fn enter<E: de::Error>(self) -> Result<Seed<'a>, E> {
        let depth = self.depth + 1;
        if depth > self.limit {
            self.too_deep.set(true);
            return Err(E::custom(format_args!(
                "nesting deeper than {} levels",
                self.limit
            )));
        }
        Ok(Seed { depth, ..self })
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match object.entry(key) {
                Entry::Occupied(seen) => {
                    return Err(de::Error::custom(format_args!(
                        "duplicate key {}",
                        excerpt(seen.key())
                    )));
                }
                Entry::Vacant(slot) => {
                    slot.insert(map.next_value_seed(inner)?);
                }
            }
        }
        Ok(Value::Object(object))
    }
}
