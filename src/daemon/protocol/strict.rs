//! JSON text to a `Value`, refusing duplicate keys at any depth (serde_json keeps the last).

use serde_json::Value;

/// Parses JSON text into a `Value` like `serde_json::from_slice`, except that an object with
/// the same key twice, at any depth, is an error (serde_json would keep the last one, so a
/// request could say `"op":"ping"` to one reader and `"op":"reset"` to another). The nesting
/// limit of serde_json's parser (128) still applies.
pub(super) fn strict_value(text: &[u8]) -> serde_json::Result<Value> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = Strict {
        path: String::new(),
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Builds a `Value`, refusing duplicate keys; `path` locates the value for the message
/// (`targets[1]`; empty for the request itself).
struct Strict {
    path: String,
}

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN or infinity, so serde_json never passes one.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
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

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict {
            path: format!("{}[{}]", self.path, out.len()),
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let inside = if self.path.is_empty() {
                    "the request".to_string()
                } else {
                    format!("`{}`", self.path)
                };
                return Err(serde::de::Error::custom(format!(
                    "duplicate key `{}` in {inside}",
                    shown(&key)
                )));
            }
            let path = if self.path.is_empty() {
                shown(&key)
            } else {
                format!("{}.{}", self.path, shown(&key))
            };
            let v = map.next_value_seed(Strict { path })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// A key as error messages show it: escaped and cut short, since it is the caller's text
/// and goes to the log.
fn shown(key: &str) -> String {
    let mut s: String = key.chars().take(32).flat_map(char::escape_debug).collect();
    if key.chars().nth(32).is_some() {
        s.push('…');
    }
    s
}
