//! KServe JSON `data` into a tensor's buffer, from a parsed `Value` or straight from the
//! request's text: the elements are converted as the deserializer meets them, so the text path
//! builds no `serde_json::Value` tree in between (a request of a thousand numbers would otherwise
//! allocate a thousand 32-byte values first). One set of rules for both: nested arrays flatten in
//! row-major order, a bare number or boolean is a rank-0 tensor, anything else is refused with
//! the element's index and value.

use std::fmt;

use edgefleet_shared::inference::Datatype;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::TensorError;
use super::elements::push_element;

/// Where a tensor's JSON elements come from: a parsed `Value`, or the text of one (an input's
/// `data` as it stands in the request body).
#[derive(Debug, Clone, Copy)]
pub(super) enum JsonSource<'a> {
    Value(&'a Value),
    Text(&'a str),
}

impl JsonSource<'_> {
    /// Appends the elements to `out`, converting each with `convert`.
    pub(super) fn collect<T>(
        self,
        datatype: Datatype,
        out: &mut Vec<T>,
        convert: &impl Fn(&Value) -> Option<T>,
    ) -> Result<(), TensorError> {
        let mut failure = None;
        let seed = Elements { datatype, out, convert, failure: &mut failure, top: true };
        let parsed = match self {
            JsonSource::Value(value) => seed.deserialize(value),
            JsonSource::Text(text) => {
                let mut parser = serde_json::Deserializer::from_str(text);
                seed.deserialize(&mut parser).and_then(|()| parser.end())
            }
        };
        match (failure, parsed) {
            (Some(e), _) => Err(e),
            (None, Ok(())) => Ok(()),
            (None, Err(e)) => Err(TensorError::Json(e.to_string())),
        }
    }
}

/// One JSON value's elements, appended to `out`; the first refusal is kept in `failure` (serde's
/// own error only stops the parser).
struct Elements<'s, T, F> {
    datatype: Datatype,
    out: &'s mut Vec<T>,
    convert: &'s F,
    failure: &'s mut Option<TensorError>,
    /// The outermost value, where only an array, a number or a boolean is taken.
    top: bool,
}

impl<T, F: Fn(&Value) -> Option<T>> Elements<'_, T, F> {
    fn push<E: de::Error>(self, value: Value) -> Result<(), E> {
        if self.top && !matches!(value, Value::Number(_) | Value::Bool(_)) {
            let datatype = self.datatype;
            return self.fail(TensorError::NotArray(datatype));
        }
        match push_element(&value, self.datatype, self.out, self.convert) {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    fn fail<E: de::Error>(self, e: TensorError) -> Result<(), E> {
        let message = e.to_string();
        *self.failure = Some(e);
        Err(E::custom(message))
    }
}

impl<'de, T, F: Fn(&Value) -> Option<T>> DeserializeSeed<'de> for Elements<'_, T, F> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T, F: Fn(&Value) -> Option<T>> Visitor<'de> for Elements<'_, T, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a (possibly nested) JSON array of {} values", self.datatype)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Elements { datatype, out, convert, failure, .. } = self;
        while seq
            .next_element_seed(Elements { datatype, out: &mut *out, convert, failure: &mut *failure, top: false })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(Value::String(v.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(Value::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.push(value)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Tensor;
    use super::*;

    /// Decoding the text gives what decoding its parsed `Value` gives, tensors and refusals alike.
    #[test]
    fn text_decodes_as_its_parsed_value_does() {
        let cases: &[(Datatype, &[usize], &str)] = &[
            (Datatype::Fp32, &[4], "[1, 2.5, 3, 4]"),
            (Datatype::Fp32, &[2, 2], "[[1, 2.5], [3, 4]]"),
            (Datatype::Int32, &[3], "[[1], [2, 3]]"),
            (Datatype::Fp32, &[0], "[]"),
            (Datatype::Int64, &[], "7"),
            (Datatype::Bool, &[], "true"),
            (Datatype::Bool, &[2], "[true, false]"),
            (Datatype::Uint64, &[1], "[18446744073709551615]"),
            (Datatype::Int64, &[1], "[-9223372036854775808]"),
            (Datatype::Fp64, &[2], "[1e300, -0.0]"),
            (Datatype::Fp16, &[3], "[1, 0.5, -2.25]"),
            (Datatype::Bytes, &[3], r#"["ab", "", "\u00e9\n"]"#),
            (Datatype::Uint8, &[2], "[1, 256]"),
            (Datatype::Uint8, &[1], "[-1]"),
            (Datatype::Int32, &[1], "[1.5]"),
            (Datatype::Bool, &[1], r#"["yes"]"#),
            (Datatype::Fp32, &[1], "[1e39]"),
            (Datatype::Fp16, &[1], "[70000]"),
            (Datatype::Fp32, &[2], "[1, null]"),
            (Datatype::Fp32, &[2], r#"[1, {"a": [1, 2]}]"#),
            (Datatype::Bytes, &[1], "[3]"),
            (Datatype::Fp32, &[3], "[1, 2]"),
            (Datatype::Bytes, &[], r#""a""#),
            (Datatype::Fp32, &[1], r#"{"a": 1}"#),
            (Datatype::Fp32, &[1], "null"),
        ];
        for &(datatype, shape, text) in cases {
            let value: Value = serde_json::from_str(text).expect("fixture is JSON");
            assert_eq!(
                Tensor::from_json_text(datatype, shape.to_vec(), text),
                Tensor::from_json(datatype, shape.to_vec(), &value),
                "{datatype} {shape:?} {text}"
            );
        }
    }

    #[test]
    fn nesting_past_the_parsers_limit_is_refused() {
        let text = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let err = Tensor::from_json_text(Datatype::Fp32, vec![1], &text).expect_err("too deep");
        assert!(matches!(err, TensorError::Json(_)), "{err}");
    }
}
