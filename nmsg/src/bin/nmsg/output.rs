//! What the commands print: JSON, pretty on a terminal and one object per
//! line otherwise, with `", "` and `": "` between items (`{"callback": 0,
//! "args": [42]}`, as documented); callbacks as `"@cb"`.

use std::io::{self, IsTerminal, Write};

use nmsg::{Args, Value};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// How callbacks are written, in output and in the arguments of `emit`.
pub(crate) const CALLBACK: &str = "@cb";

/// Prints values to stdout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Printer {
    pretty: bool,
}

impl Printer {
    /// Pretty when stdout is a terminal.
    pub(crate) fn new() -> Self {
        Printer {
            pretty: io::stdout().is_terminal(),
        }
    }

    /// Prints `value` and a newline, in one write, and flushes: lines from
    /// several connections do not interleave, and a reader sees each at once.
    /// A closed stdout (`| head`) is not an error here.
    pub(crate) fn print(&self, value: &impl Serialize) {
        let mut line = Vec::with_capacity(128);
        let written = if self.pretty {
            serde_json::to_writer_pretty(&mut line, value)
        } else {
            value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut line, Spaced,
            ))
        };
        if let Err(e) = written {
            eprintln!("nmsg: cannot print a value as JSON: {e}");
            return;
        }
        line.push(b'\n');
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(&line).and_then(|()| stdout.flush());
    }
}

/// JSON on one line with a space after each `,` and `:`.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// One argument as printed: its value, or `"@cb"` for a callback.
#[derive(Debug)]
pub(crate) enum Item {
    Data(Value),
    Callback,
}

impl Serialize for Item {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Item::Data(value) => Json(value).serialize(s),
            Item::Callback => s.serialize_str(CALLBACK),
        }
    }
}

/// The arguments from `first` on, as printed. An argument that does not
/// decode is printed as null, with the reason on stderr.
pub(crate) fn items(args: &Args, first: usize) -> Vec<Item> {
    (first..args.len())
        .map(|i| {
            if args.is_callback(i) {
                return Item::Callback;
            }
            Item::Data(args.value(i).unwrap_or_else(|e| {
                eprintln!("nmsg: {e}");
                Value::Nil
            }))
        })
        .collect()
}

/// `{"callback": N, "args": [...]}`.
#[derive(Debug, Serialize)]
pub(crate) struct CallbackLine {
    pub(crate) callback: usize,
    pub(crate) args: Vec<Item>,
}

/// `{"event": NAME, "args": [...]}`.
#[derive(Debug, Serialize)]
pub(crate) struct EventLine {
    pub(crate) event: String,
    pub(crate) args: Vec<Item>,
}

/// A value as JSON: maps in their order, binary as an array of bytes, map
/// keys that are not strings as their JSON text, an extension value as
/// `{"ext": TYPE, "data": [bytes]}`, NaN and infinities as null.
pub(crate) struct Json<'a>(pub(crate) &'a Value);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Nil => s.serialize_unit(),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
                (Some(u), _) => s.serialize_u64(u),
                (None, Some(n)) => s.serialize_i64(n),
                (None, None) => s.serialize_unit(),
            },
            Value::F32(f) => s.serialize_f32(*f),
            Value::F64(f) => s.serialize_f64(*f),
            Value::String(text) => match text.as_str() {
                Some(text) => s.serialize_str(text),
                None => s.serialize_str(&String::from_utf8_lossy(text.as_bytes())),
            },
            Value::Binary(bytes) => s.collect_seq(bytes),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Json(item))?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    match key.as_str() {
                        Some(key) => map.serialize_entry(key, &Json(value))?,
                        None => {
                            let key = serde_json::to_string(&Json(key))
                                .unwrap_or_else(|_| key.to_string());
                            map.serialize_entry(&key, &Json(value))?
                        }
                    }
                }
                map.end()
            }
            Value::Ext(kind, data) => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("ext", kind)?;
                map.serialize_entry("data", data)?;
                map.end()
            }
        }
    }
}

/// Arguments given as JSON text: the bare word `@cb` is a callback.
pub(crate) fn parse_arg(text: &str) -> Result<Item, String> {
    if text == CALLBACK {
        return Ok(Item::Callback);
    }
    serde_json::from_str::<Value>(text)
        .map(Item::Data)
        .map_err(|e| format!("`{text}` is not valid JSON ({e}); quote a string: '\"{text}\"'"))
}

/// Arguments given as a JSON array: the string `"@cb"` is a callback.
pub(crate) fn parse_array(text: &str) -> Result<Vec<Item>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        format!("stdin is not valid JSON ({e}); give a JSON array of the arguments")
    })?;
    let Value::Array(items) = value else {
        return Err(format!(
            "stdin holds {}, not a JSON array of the arguments",
            serde_json::to_string(&Json(&value)).unwrap_or_default()
        ));
    };
    Ok(items
        .into_iter()
        .map(|item| match item.as_str() {
            Some(CALLBACK) => Item::Callback,
            _ => Item::Data(item),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(value: &impl Serialize) -> String {
        let mut out = Vec::new();
        value
            .serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, Spaced,
            ))
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_line_has_a_space_after_each_comma_and_colon() {
        let printed = CallbackLine {
            callback: 0,
            args: vec![Item::Data(Value::from(42)), Item::Callback],
        };
        assert_eq!(line(&printed), r#"{"callback": 0, "args": [42, "@cb"]}"#);
    }

    #[test]
    fn maps_keep_their_order_and_other_values_have_a_json_form() {
        let value: Value = serde_json::from_str(r#"{"b": 1, "a": [true, null, -2, 1.5]}"#).unwrap();
        assert_eq!(
            line(&Json(&value)),
            r#"{"b": 1, "a": [true, null, -2, 1.5]}"#
        );
        let other = Value::Map(vec![
            (Value::from(1), Value::Binary(vec![0, 255])),
            (Value::from("x"), Value::Ext(3, vec![7])),
            (Value::from("nan"), Value::F64(f64::NAN)),
        ]);
        assert_eq!(
            line(&Json(&other)),
            r#"{"1": [0, 255], "x": {"ext": 3, "data": [7]}, "nan": null}"#
        );
    }

    #[test]
    fn arguments_are_json_or_the_callback_word() {
        assert!(matches!(parse_arg("@cb"), Ok(Item::Callback)));
        assert!(matches!(
            parse_arg("\"@cb\""),
            Ok(Item::Data(Value::String(_)))
        ));
        assert!(matches!(parse_arg("-2"), Ok(Item::Data(v)) if v.as_i64() == Some(-2)));
        let error = parse_arg("hello").unwrap_err();
        assert!(error.starts_with("`hello` is not valid JSON"), "{error}");
        let from_stdin = parse_array(r#"[1, "@cb", {"k": "v"}]"#).unwrap();
        assert!(matches!(from_stdin[1], Item::Callback));
        assert!(parse_array("{}").unwrap_err().contains("not a JSON array"));
    }
}
