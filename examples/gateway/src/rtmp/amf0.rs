//! AMF0 (Action Message Format, the encoding of RTMP commands and FLV script data), as far as
//! RTMP servers need it: numbers, booleans, strings, objects, ECMA and strict arrays, null and
//! undefined. Bounded: nesting depth, entries per container and the whole input (the RTMP
//! message it comes from is already capped). GStreamer-free.

use std::fmt;

/// Containers nested deeper than this are refused.
pub const MAX_DEPTH: usize = 16;
/// Entries of one object or array (commands carry a handful).
pub const MAX_ENTRIES: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Boolean(bool),
    String(String),
    Object(Vec<(String, Value)>),
    Null,
    Undefined,
    EcmaArray(Vec<(String, Value)>),
    StrictArray(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Truncated,
    /// A type marker we do not take (references, dates, XML, AMF3 switches...).
    Unsupported(u8),
    TooDeep,
    TooManyEntries,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("AMF0 value cut short"),
            Error::Unsupported(m) => write!(f, "AMF0 type 0x{m:02x} not supported"),
            Error::TooDeep => write!(f, "AMF0 values nested deeper than {MAX_DEPTH}"),
            Error::TooManyEntries => {
                write!(f, "AMF0 container with more than {MAX_ENTRIES} entries")
            }
        }
    }
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(p) | Value::EcmaArray(p) => {
                p.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    pub fn object(props: &[(&str, Value)]) -> Value {
        Value::Object(
            props
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }
}

/// Decodes every value of `data` (a command: name, transaction id, arguments).
pub fn decode_all(mut data: &[u8]) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if out.len() >= MAX_ENTRIES {
            return Err(Error::TooManyEntries);
        }
        out.push(decode(&mut data, 0)?);
    }
    Ok(out)
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], Error> {
    if data.len() < n {
        return Err(Error::Truncated);
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Ok(head)
}

fn u16_at(data: &mut &[u8]) -> Result<usize, Error> {
    let b = take(data, 2)?;
    Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
}

fn u32_at(data: &mut &[u8]) -> Result<usize, Error> {
    let b = take(data, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

fn string(data: &mut &[u8], len: usize) -> Result<String, Error> {
    Ok(String::from_utf8_lossy(take(data, len)?).into_owned())
}

/// Properties up to the object end marker (empty name, 0x09).
fn properties(data: &mut &[u8], depth: usize) -> Result<Vec<(String, Value)>, Error> {
    let mut props = Vec::new();
    loop {
        let len = u16_at(data)?;
        if len == 0 && data.first() == Some(&0x09) {
            *data = &data[1..];
            return Ok(props);
        }
        if props.len() >= MAX_ENTRIES {
            return Err(Error::TooManyEntries);
        }
        let key = string(data, len)?;
        props.push((key, decode(data, depth + 1)?));
    }
}

fn decode(data: &mut &[u8], depth: usize) -> Result<Value, Error> {
    if depth > MAX_DEPTH {
        return Err(Error::TooDeep);
    }
    let marker = take(data, 1)?[0];
    Ok(match marker {
        0x00 => {
            let b = take(data, 8)?;
            Value::Number(f64::from_be_bytes(
                b.try_into().map_err(|_| Error::Truncated)?,
            ))
        }
        0x01 => Value::Boolean(take(data, 1)?[0] != 0),
        0x02 => {
            let len = u16_at(data)?;
            Value::String(string(data, len)?)
        }
        0x03 => Value::Object(properties(data, depth)?),
        0x05 => Value::Null,
        0x06 => Value::Undefined,
        0x08 => {
            // The count is a hint only (encoders get it wrong): the end marker ends it.
            u32_at(data)?;
            Value::EcmaArray(properties(data, depth)?)
        }
        0x0a => {
            let n = u32_at(data)?;
            if n > MAX_ENTRIES {
                return Err(Error::TooManyEntries);
            }
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(decode(data, depth + 1)?);
            }
            Value::StrictArray(items)
        }
        0x0c => {
            let len = u32_at(data)?;
            Value::String(string(data, len)?)
        }
        m => return Err(Error::Unsupported(m)),
    })
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Longer strings than 65535 bytes are cut (we only write short ones).
    let b = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_props(out: &mut Vec<u8>, props: &[(String, Value)]) {
    for (k, v) in props {
        put_str(out, k);
        encode(out, v);
    }
    out.extend_from_slice(&[0, 0, 0x09]);
}

pub fn encode(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Number(n) => {
            out.push(0x00);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Boolean(b) => out.extend_from_slice(&[0x01, u8::from(*b)]),
        Value::String(s) => {
            out.push(0x02);
            put_str(out, s);
        }
        Value::Object(p) => {
            out.push(0x03);
            put_props(out, p);
        }
        Value::Null => out.push(0x05),
        Value::Undefined => out.push(0x06),
        Value::EcmaArray(p) => {
            out.push(0x08);
            out.extend_from_slice(&(p.len() as u32).to_be_bytes());
            put_props(out, p);
        }
        Value::StrictArray(items) => {
            out.push(0x0a);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for i in items {
                encode(out, i);
            }
        }
    }
}

pub fn encode_all(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        encode(&mut out, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let values = vec![
            Value::String("connect".into()),
            Value::Number(1.0),
            Value::object(&[
                ("app", Value::String("live".into())),
                ("fpad", Value::Boolean(false)),
                ("n", Value::Null),
            ]),
            Value::EcmaArray(vec![("duration".into(), Value::Number(0.0))]),
            Value::StrictArray(vec![Value::Undefined, Value::Number(2.5)]),
        ];
        let bytes = encode_all(&values);
        assert_eq!(decode_all(&bytes), Ok(values.clone()));
        assert_eq!(values[2].get("app").and_then(Value::as_str), Some("live"));
    }

    #[test]
    fn hostile_input_is_refused() {
        assert_eq!(decode_all(&[0x00, 1, 2]), Err(Error::Truncated));
        assert_eq!(decode_all(&[0x02, 0xff, 0xff, b'a']), Err(Error::Truncated));
        assert_eq!(decode_all(&[0x07, 0, 1]), Err(Error::Unsupported(7)));
        // Objects nested past the limit.
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(&[0x03, 0, 1, b'a']);
        }
        assert_eq!(decode_all(&deep), Err(Error::TooDeep));
        // A strict array claiming 4 billion entries allocates nothing.
        assert_eq!(
            decode_all(&[0x0a, 0xff, 0xff, 0xff, 0xff]),
            Err(Error::TooManyEntries)
        );
        // An ECMA array whose count lies is read to its end marker.
        let mut lying = vec![0x08, 0, 0, 0, 9];
        lying.extend_from_slice(&[0, 1, b'a', 0x05, 0, 0, 0x09]);
        assert_eq!(
            decode_all(&lying),
            Ok(vec![Value::EcmaArray(vec![("a".into(), Value::Null)])])
        );
    }
}
