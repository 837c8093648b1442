//! The dynamic value type: anything MsgPack can carry, binary included.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;

/// A dynamic value: nil, booleans, integers, floats, strings, binary, arrays,
/// maps with any keys, and MsgPack extension values.
///
/// It is [`rmpv::Value`], re-exported: it round-trips everything MsgPack
/// carries, and converts to and from any serde type with [`to_value`] and
/// [`from_value`].
///
/// ```
/// use nmsg::Value;
/// let v = nmsg::to_value(&("hello", 42, vec![1.5])).unwrap();
/// assert_eq!(v[0].as_str(), Some("hello"));
/// let back: (String, u8, Vec<f64>) = nmsg::from_value(v).unwrap();
/// assert_eq!(back.1, 42);
/// ```
pub use rmpv::Value;

/// Converts any serializable value into a [`Value`]. Structs become maps keyed
/// by field name.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, Error> {
    rmpv::ext::to_value(value).map_err(|e| Error::argument(0, e))
}

/// Converts a [`Value`] into any deserializable type. Integer types accept
/// integral floats, as arguments do (a JavaScript peer may write `2 ** 40` as
/// a float; see [`protocol`](crate::protocol#javascript-numbers)).
///
/// ```
/// let at: u64 = nmsg::from_value(nmsg::Value::F64(1_460_592_000_000.0)).unwrap();
/// assert_eq!(at, 1_460_592_000_000);
/// assert!(nmsg::from_value::<u64>(nmsg::Value::F64(1.5)).is_err());
/// ```
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, Error> {
    T::deserialize(crate::jsnum::JsNumbers(value))
        .map_err(|e: rmpv::ext::Error| Error::argument(0, e))
}
