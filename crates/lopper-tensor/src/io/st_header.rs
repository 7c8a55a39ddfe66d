//! A second look at a safetensors header, for what the `safetensors` crate's parser accepts
//! silently or refuses without naming the tensor: a name given twice (its JSON map keeps one of
//! them), and the first tensor whose dtype, shape and `data_offsets` disagree or point past the
//! data ("invalid shape, data type, or offset for tensor", with no name).
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// The header's top-level keys and values, in order and with repeats.
struct Pairs(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Pairs, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = m.next_entry::<String, Value>()? {
                    out.push(kv);
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The header's entries and the length of the data after it; `None` when the header itself does
/// not parse (the crate's own message says why).
fn pairs(buf: &[u8]) -> Option<(Vec<(String, Value)>, u64)> {
    let n = u64::from_le_bytes(buf.get(..8)?.try_into().ok()?);
    let end = 8usize.checked_add(usize::try_from(n).ok()?)?;
    let json = buf.get(8..end)?;
    let Pairs(p) = serde_json::from_slice(json).ok()?;
    Some((p, (buf.len() - end) as u64))
}

/// The first tensor name that appears twice in the header.
pub(crate) fn duplicate(buf: &[u8]) -> Option<String> {
    let (p, _) = pairs(buf)?;
    let mut seen = std::collections::HashSet::new();
    p.into_iter()
        .map(|(k, _)| k)
        .find(|k| !seen.insert(k.clone()))
}

/// The tensor names in header order (`__metadata__` left out).
pub(crate) fn names(buf: &[u8]) -> Option<Vec<String>> {
    let (p, _) = pairs(buf)?;
    Some(
        p.into_iter()
            .map(|(k, _)| k)
            .filter(|k| k != "__metadata__")
            .collect(),
    )
}

/// Bytes per element of a safetensors dtype name; `None` for names it does not know.
fn elem_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" | "C64" => 8,
        _ => return None,
    })
}

/// What is wrong with the first tensor whose dtype, shape and offsets disagree, naming it. Asked
/// before the crate parses: offsets past the data never reach its unchecked sum.
pub(crate) fn explain(buf: &[u8]) -> Option<String> {
    let (p, data_len) = pairs(buf)?;
    for (name, v) in p.iter().filter(|(k, _)| k != "__metadata__") {
        let dtype = v.get("dtype").and_then(Value::as_str).unwrap_or("?");
        let shape: Option<Vec<u64>> = v
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect());
        let offs: Option<Vec<u64>> = v
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect());
        let (Some(shape), Some(offs)) = (shape, offs) else {
            return Some(format!(
                "tensor {name:?}: shape or data_offsets missing or not lists of non-negative integers"
            ));
        };
        let [a, b] = offs[..] else {
            return Some(format!(
                "tensor {name:?}: data_offsets {offs:?} is not [begin, end]"
            ));
        };
        if b < a || b > data_len {
            return Some(format!(
                "tensor {name:?}: data_offsets [{a}, {b}] lie outside the {data_len} bytes of data"
            ));
        }
        let need =
            elem_bytes(dtype).and_then(|e| shape.iter().try_fold(e, |x, &d| x.checked_mul(d)));
        match need {
            Some(need) if need != b - a => {
                return Some(format!(
                    "tensor {name:?} ({dtype} {shape:?}): data_offsets [{a}, {b}] hold {} bytes, its dtype and shape need {need}",
                    b - a
                ));
            }
            None if elem_bytes(dtype).is_some() => {
                return Some(format!("tensor {name:?}: shape {shape:?} overflows"));
            }
            _ => {}
        }
    }
    None
}
