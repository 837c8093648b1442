//! JavaScript numbers: integer types that accept the floats a JavaScript peer
//! writes for them.
//!
//! JavaScript has one number type, a float64. MsgPack libraries of Node.js
//! differ in how they write a number that is an integer: msgpack-lite (0.1 and
//! 0.2) writes every one outside the 32-bit range as a float64, so
//! `Date.now()` or `2 ** 40` arrives as `1.46e12` or `1099511627776.0`, not as
//! an integer, and JSON peers may write `3.0`. A Rust parameter of an integer
//! type accepts such a float when it is integral and in the type's range,
//! exactly: [`JsNumbers`] wraps any serde deserializer and, where an integer
//! is asked for and a float is found, hands the integer on. Anything else
//! (`1.5`, NaN, infinity, out of range) is an error that names the value and
//! the type, as serde's own errors do: `invalid type: floating point `1.5`,
//! expected i64`.
//!
//! `i128` and `u128` are read by each codec's own rules for them (MsgPack
//! has a form of its own), integers only.
//!
//! Integers beyond 2^53 (`Number.MAX_SAFE_INTEGER`) cannot all be held by a
//! float64: a JavaScript peer loses their precision before they are sent, and
//! a float it sends for one is taken as the integer it holds exactly.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, Unexpected, Visitor};

thread_local! {
    /// Whether this thread looks for CESU-8 strings in the value it
    /// deserializes ([`WATCHING`]), and found bytes that may be one
    /// ([`SUSPECT`]); [`IDLE`] when it does not look.
    static CESU8: Cell<u8> = const { Cell::new(IDLE) };
}

const IDLE: u8 = 0;
const WATCHING: u8 = 1;
const SUSPECT: u8 = 2;

/// Notes bytes handed to a visitor that may be a string msgpack-lite 0.1
/// wrote as CESU-8 (MsgPack's reader hands over a `str` that is not UTF-8 as
/// bytes): while watching, bytes whose first break of UTF-8 is a
/// surrogate's CESU-8 form (0xED, then 0xA0 to 0xBF).
fn may_be_cesu8(bytes: &[u8]) {
    if CESU8.with(Cell::get) != WATCHING {
        return;
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        let at = e.valid_up_to();
        if bytes.get(at) == Some(&0xED) && matches!(bytes.get(at + 1), Some(0xA0..=0xBF)) {
            CESU8.with(|s| s.set(SUSPECT));
        }
    }
}

/// Runs `decode` watching for CESU-8 strings, and says whether what it
/// deserialized may have held one (then the caller rewrites the input and
/// decodes again).
pub(crate) fn watching_for_cesu8<T>(decode: impl FnOnce() -> T) -> (T, bool) {
    CESU8.with(|s| s.set(WATCHING));
    let out = decode();
    (out, CESU8.with(|s| s.replace(IDLE)) == SUSPECT)
}

/// A deserializer whose integer types also accept integral floats; the same
/// for every value nested in what it deserializes.
pub(crate) struct JsNumbers<D>(pub(crate) D);

/// 2^63 and 2^64 as floats: the first floats out of `i64`'s and `u64`'s range.
const TWO_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_64: f64 = 18_446_744_073_709_551_616.0;

macro_rules! forward_wrapped {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method(Wrap(visitor))
        }
    )*};
}

/// An integer is read as any value: a number of any kind reaches the
/// [`Integer`] visitor, and anything else the integer type's own visitor, whose
/// error names the value and the type (MsgPack's reader, asked for an integer,
/// would only say that the marker is wrong).
macro_rules! forward_integers {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.deserialize_any(Integer(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for JsNumbers<D> {
    type Error = D::Error;

    forward_wrapped!(
        deserialize_any,
        deserialize_bool,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
        deserialize_i128,
        deserialize_u128,
    );

    forward_integers!(
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, Wrap(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, Wrap(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, Wrap(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple_struct(name, len, Wrap(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, Wrap(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, Wrap(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A visitor of any value: passes scalars on as they are, and wraps what it
/// is given to go deeper (sequences, maps, enums, options, newtypes).
struct Wrap<V>(V);

/// A visitor of an integer: an integral float in range is passed on as the
/// integer it holds; other values as they are.
struct Integer<V>(V);

/// What both visitors pass on unchanged: every scalar but floats, and the
/// nested forms, wrapped.
macro_rules! visit_common {
    () => {
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.expecting(f)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<V::Value, E> {
            self.0.visit_bool(v)
        }
        fn visit_i8<E: de::Error>(self, v: i8) -> Result<V::Value, E> {
            self.0.visit_i8(v)
        }
        fn visit_i16<E: de::Error>(self, v: i16) -> Result<V::Value, E> {
            self.0.visit_i16(v)
        }
        fn visit_i32<E: de::Error>(self, v: i32) -> Result<V::Value, E> {
            self.0.visit_i32(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
            self.0.visit_i64(v)
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<V::Value, E> {
            self.0.visit_i128(v)
        }
        fn visit_u8<E: de::Error>(self, v: u8) -> Result<V::Value, E> {
            self.0.visit_u8(v)
        }
        fn visit_u16<E: de::Error>(self, v: u16) -> Result<V::Value, E> {
            self.0.visit_u16(v)
        }
        fn visit_u32<E: de::Error>(self, v: u32) -> Result<V::Value, E> {
            self.0.visit_u32(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
            self.0.visit_u64(v)
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<V::Value, E> {
            self.0.visit_u128(v)
        }
        fn visit_char<E: de::Error>(self, v: char) -> Result<V::Value, E> {
            self.0.visit_char(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
            self.0.visit_str(v)
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
            self.0.visit_borrowed_str(v)
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
            self.0.visit_string(v)
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
            may_be_cesu8(v);
            self.0.visit_bytes(v)
        }
        fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<V::Value, E> {
            may_be_cesu8(v);
            self.0.visit_borrowed_bytes(v)
        }
        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<V::Value, E> {
            may_be_cesu8(&v);
            self.0.visit_byte_buf(v)
        }
        fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
            self.0.visit_none()
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<V::Value, D2::Error> {
            self.0.visit_some(JsNumbers(d))
        }
        fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
            self.0.visit_unit()
        }
        fn visit_newtype_struct<D2: Deserializer<'de>>(self, d: D2) -> Result<V::Value, D2::Error> {
            self.0.visit_newtype_struct(JsNumbers(d))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
            self.0.visit_seq(JsNumbers(seq))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
            self.0.visit_map(JsNumbers(map))
        }
        fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
            self.0.visit_enum(JsNumbers(data))
        }
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    visit_common!();

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<V::Value, E> {
        self.0.visit_f32(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        self.0.visit_f64(v)
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Integer<V> {
    type Value = V::Value;

    visit_common!();

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<V::Value, E> {
        self.visit_f64(f64::from(v))
    }

    /// An integral float in `i64`'s or `u64`'s range is the integer it holds
    /// (exactly: such a float converts without rounding); the visitor then
    /// checks it against its own type's range, with its own error.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        if v.fract() == 0.0 {
            if (0.0..TWO_64).contains(&v) {
                return self.0.visit_u64(v as u64);
            }
            if (-TWO_63..0.0).contains(&v) {
                return self.0.visit_i64(v as i64);
            }
        }
        Err(E::invalid_type(Unexpected::Float(v), &self))
    }
}

/// The same adapter over the parts a visitor is given to go deeper.
impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for JsNumbers<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(JsNumbers(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for JsNumbers<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(JsNumbers(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(JsNumbers(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for JsNumbers<A> {
    type Error = A::Error;
    type Variant = JsNumbers<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(JsNumbers(seed))?;
        Ok((value, JsNumbers(variant)))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for JsNumbers<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(JsNumbers(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, Wrap(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, Wrap(visitor))
    }
}

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for JsNumbers<T> {
    type Value = T::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        self.0.deserialize(JsNumbers(d))
    }
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde::Deserialize;

    use super::JsNumbers;

    fn json<T: DeserializeOwned>(text: &str) -> Result<T, String> {
        let mut de = serde_json::Deserializer::from_str(text);
        T::deserialize(JsNumbers(&mut de)).map_err(|e| e.to_string())
    }

    fn msgpack<T: DeserializeOwned>(value: &impl serde::Serialize) -> Result<T, String> {
        let bytes = rmp_serde::to_vec(value).unwrap();
        let mut de = rmp_serde::Deserializer::from_read_ref(&bytes);
        T::deserialize(JsNumbers(&mut de)).map_err(|e| e.to_string())
    }

    #[test]
    fn integral_floats_in_range_are_integers() {
        // What msgpack-lite writes for Date.now(), 2 ** 40, -5e9, 2 ** 53 - 1.
        for v in [
            1_460_592_000_000.0,
            1_099_511_627_776.0,
            9_007_199_254_740_991.0,
        ] {
            assert_eq!(msgpack::<u64>(&v), Ok(v as u64));
            assert_eq!(msgpack::<i64>(&v), Ok(v as i64));
        }
        assert_eq!(msgpack::<i64>(&-5e9), Ok(-5_000_000_000));
        assert_eq!(msgpack::<i32>(&-5.0f32), Ok(-5));
        assert_eq!(msgpack::<u8>(&255.0), Ok(255));
        assert_eq!(json::<u64>("1099511627776.0"), Ok(1 << 40));
        assert_eq!(json::<i16>("-3e2"), Ok(-300));
        // The largest floats in range, and the bounds.
        assert_eq!(msgpack::<i64>(&-9_223_372_036_854_775_808.0), Ok(i64::MIN));
        assert_eq!(
            msgpack::<u64>(&18_446_744_073_709_549_568.0),
            Ok(18_446_744_073_709_549_568)
        );
    }

    #[test]
    fn other_floats_are_errors_that_name_the_value_and_the_type() {
        assert_eq!(
            msgpack::<i64>(&1.5),
            Err("invalid type: floating point `1.5`, expected i64".into())
        );
        assert_eq!(
            msgpack::<u32>(&f64::NAN),
            Err("invalid type: floating point `NaN`, expected u32".into())
        );
        assert_eq!(
            msgpack::<u64>(&f64::INFINITY),
            Err("invalid type: floating point `inf`, expected u64".into())
        );
        assert_eq!(
            msgpack::<u64>(&18_446_744_073_709_551_616.0),
            Err("invalid type: floating point `18446744073709552000.0`, expected u64".into())
        );
        assert_eq!(
            msgpack::<u8>(&256.0),
            Err("invalid value: integer `256`, expected u8".into())
        );
        assert_eq!(
            msgpack::<u64>(&-1.0),
            Err("invalid value: integer `-1`, expected u64".into())
        );
        assert!(json::<i64>("1.5")
            .unwrap_err()
            .starts_with("invalid type: floating point `1.5`, expected i64"));
    }

    #[test]
    fn nested_integers_accept_floats_and_floats_stay_floats() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct At {
            at: u64,
            tags: Vec<i32>,
            ratio: f64,
            maybe: Option<u16>,
            pair: (i64, Option<u8>),
            kind: Kind,
        }
        #[derive(Debug, Deserialize, PartialEq)]
        enum Kind {
            Count(u32),
            Span { from: i64, to: i64 },
        }
        let got: At = json(
            r#"{"at": 1460592000000.0, "tags": [1.0, -2, 3e0], "ratio": 2.0, "maybe": 7.0,
                "pair": [-5e9, null], "kind": {"Span": {"from": 1.0, "to": 2e3}}}"#,
        )
        .unwrap();
        assert_eq!(
            got,
            At {
                at: 1_460_592_000_000,
                tags: vec![1, -2, 3],
                ratio: 2.0,
                maybe: Some(7),
                pair: (-5_000_000_000, None),
                kind: Kind::Span { from: 1, to: 2000 },
            }
        );
        assert_eq!(json::<Kind>(r#"{"Count": 4.0}"#), Ok(Kind::Count(4)));
        let map: std::collections::HashMap<String, u64> = json(r#"{"a": 1.0}"#).unwrap();
        assert_eq!(map["a"], 1);
        assert_eq!(json::<f64>("3"), Ok(3.0));
        assert_eq!(json::<String>(r#""x""#), Ok("x".into()));
    }
}
