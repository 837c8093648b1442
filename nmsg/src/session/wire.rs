//! The extension frames of sessions, in the connection's codec: maps with the
//! kind under `x` and no `i` (see [`protocol`](crate::protocol#sessions)).

use bytes::{BufMut, BytesMut};

use crate::framing::PREFIX_LEN;

/// The version of the extension written in `hello` and `welcome`.
pub(crate) const VERSION: u64 = 1;

/// How a session's extension frames are encoded: the connection's codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    MsgPack,
    Json,
}

impl Form {
    /// The form of the codec named `name` (a codec of one's own is taken
    /// for MessagePack).
    pub(crate) fn of(name: &str) -> Form {
        if name == "json" {
            Form::Json
        } else {
            Form::MsgPack
        }
    }
}

/// What a `welcome` says of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    New,
    Resumed,
    Expired,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::New => "new",
            Outcome::Resumed => "resumed",
            Outcome::Expired => "expired",
        }
    }
}

/// An extension frame.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ext {
    Hello {
        s: Option<String>,
        n: u64,
        /// Credentials (authentication), any value.
        k: Option<rmpv::Value>,
        /// `"p":1`: a plain connection that authenticates, no session.
        plain: bool,
    },
    /// A `welcome` without a session: the answer to a plain hello.
    Admit,
    /// `deny`: the server rejected the credentials (`m`: why), and closes.
    Deny(String),
    Welcome {
        s: String,
        n: u64,
        z: Outcome,
    },
    Ack(u64),
    Ping(u64),
    Pong(u64),
    /// An extension frame of a kind this side does not know: ignored.
    Other,
}

/// True when `payload` is an extension frame: a map with the key `x` and no
/// `i`. nmsg's writers, and the JavaScript peer's, put `x` first, and a data
/// frame's first key is `i`: a look at a few bytes decides those. A small map
/// whose first key is another (an extension frame from a writer that orders
/// its keys otherwise, or the first release's keyed bulk `{"b": [..]}`) is
/// decoded to see.
#[inline]
pub(crate) fn is_ext(payload: &[u8]) -> bool {
    match payload {
        // A fixmap, then the fixstr "x" or "i".
        [0x81..=0x8f, 0xa1, b'i', ..] => false,
        [0x81..=0x8f, 0xa1, b'x', ..] => true,
        _ => is_ext_looked_into(payload),
    }
}

/// [`is_ext`] for a payload whose first bytes do not decide.
#[inline(never)]
fn is_ext_looked_into(payload: &[u8]) -> bool {
    match payload {
        [m, ..] if (0x81..=0x8f).contains(m) && payload.len() <= SMALL => {
            let Ok(value) = rmpv::decode::read_value(&mut &payload[..]) else {
                return false;
            };
            let keys = value.as_map().map(|m| {
                m.iter()
                    .filter_map(|(k, _)| k.as_str())
                    .fold((false, false), |(x, i), k| (x || k == "x", i || k == "i"))
            });
            keys == Some((true, false))
        }
        [b'{', rest @ ..] => {
            let rest = rest.trim_ascii_start();
            if rest.starts_with(b"\"x\"") {
                return true;
            }
            if rest.starts_with(b"\"i\"") || payload.len() > SMALL {
                return false;
            }
            match serde_json::from_slice::<serde_json::Value>(payload) {
                Ok(serde_json::Value::Object(map)) => {
                    map.contains_key("x") && !map.contains_key("i")
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// Maps up to this size whose first key is neither `x` nor `i` are decoded
/// to tell an extension frame (the largest, a welcome, is about 70 bytes).
const SMALL: usize = 128;

/// Decodes an extension frame (`is_ext` said it is one); `None` if it is
/// not well formed.
pub(crate) fn decode(form: Form, payload: &[u8]) -> Option<Ext> {
    let mut fields = Fields::default();
    match form {
        Form::MsgPack => {
            let value = rmpv::decode::read_value(&mut &payload[..]).ok()?;
            let map = value.as_map()?;
            for (k, v) in map {
                let key = k.as_str()?;
                match key {
                    "x" => fields.x = v.as_str().map(str::to_owned),
                    "s" => fields.s = v.as_str().map(str::to_owned),
                    "n" => fields.n = number(v.as_u64(), v.as_f64()),
                    "z" => fields.z = v.as_str().map(str::to_owned),
                    "m" => fields.m = v.as_str().map(str::to_owned),
                    "p" => fields.p = !v.is_nil() && v.as_bool() != Some(false),
                    "k" => fields.k = Some(v.clone()),
                    "i" => return None,
                    _ => {}
                }
            }
        }
        Form::Json => {
            let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
            let map = value.as_object()?;
            for (key, v) in map {
                match key.as_str() {
                    "x" => fields.x = v.as_str().map(str::to_owned),
                    "s" => fields.s = v.as_str().map(str::to_owned),
                    "n" => fields.n = number(v.as_u64(), v.as_f64()),
                    "z" => fields.z = v.as_str().map(str::to_owned),
                    "m" => fields.m = v.as_str().map(str::to_owned),
                    "p" => fields.p = !v.is_null() && v.as_bool() != Some(false),
                    "k" => fields.k = rmpv::ext::to_value(v).ok(),
                    "i" => return None,
                    _ => {}
                }
            }
        }
    }
    let n = fields.n.unwrap_or(0);
    Some(match fields.x.as_deref()? {
        "hello" => Ext::Hello {
            s: fields.s,
            n,
            k: fields.k.filter(|k| !k.is_nil()),
            plain: fields.p,
        },
        "welcome" if fields.s.is_none() => Ext::Admit,
        "deny" => Ext::Deny(fields.m.unwrap_or_default()),
        "welcome" => Ext::Welcome {
            s: fields.s?,
            n,
            z: match fields.z.as_deref() {
                Some("resumed") => Outcome::Resumed,
                Some("expired") => Outcome::Expired,
                _ => Outcome::New,
            },
        },
        "ack" => Ext::Ack(n),
        "ping" => Ext::Ping(n),
        "pong" => Ext::Pong(n),
        _ => Ext::Other,
    })
}

/// A count as JavaScript may write it (a float with an integer value).
fn number(int: Option<u64>, float: Option<f64>) -> Option<u64> {
    int.or_else(|| {
        float
            .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 9.007_199_254_740_992e15)
            .map(|f| f as u64)
    })
}

#[derive(Default)]
struct Fields {
    x: Option<String>,
    s: Option<String>,
    n: Option<u64>,
    z: Option<String>,
    m: Option<String>,
    p: bool,
    k: Option<rmpv::Value>,
}

/// Appends `ext`, length-prefixed, to `out`.
pub(crate) fn put(form: Form, ext: &Ext, out: &mut BytesMut) {
    let mut pairs: Vec<(&str, Val<'_>)> = Vec::with_capacity(5);
    match ext {
        Ext::Hello { s, n, k, plain } => {
            pairs.push(("x", Val::Str("hello")));
            pairs.push(("v", Val::Num(VERSION)));
            if let Some(s) = s {
                pairs.push(("s", Val::Str(s)));
                pairs.push(("n", Val::Num(*n)));
            }
            if *plain {
                pairs.push(("p", Val::Num(1)));
            }
            if let Some(k) = k {
                pairs.push(("k", Val::Any(k)));
            }
        }
        Ext::Admit => {
            pairs.push(("x", Val::Str("welcome")));
            pairs.push(("v", Val::Num(VERSION)));
        }
        Ext::Deny(m) => {
            pairs.push(("x", Val::Str("deny")));
            pairs.push(("m", Val::Str(m)));
        }
        Ext::Welcome { s, n, z } => {
            pairs.push(("x", Val::Str("welcome")));
            pairs.push(("v", Val::Num(VERSION)));
            pairs.push(("s", Val::Str(s)));
            pairs.push(("n", Val::Num(*n)));
            pairs.push(("z", Val::Str(z.name())));
        }
        Ext::Ack(n) => {
            pairs.push(("x", Val::Str("ack")));
            pairs.push(("n", Val::Num(*n)));
        }
        Ext::Ping(n) => {
            pairs.push(("x", Val::Str("ping")));
            pairs.push(("n", Val::Num(*n)));
        }
        Ext::Pong(n) => {
            pairs.push(("x", Val::Str("pong")));
            pairs.push(("n", Val::Num(*n)));
        }
        Ext::Other => return,
    }
    let mut payload = Vec::with_capacity(64);
    match form {
        Form::MsgPack => {
            let _ = rmp::encode::write_map_len(&mut payload, pairs.len() as u32);
            for (k, v) in &pairs {
                let _ = rmp::encode::write_str(&mut payload, k);
                match v {
                    Val::Str(s) => {
                        let _ = rmp::encode::write_str(&mut payload, s);
                    }
                    Val::Num(n) => {
                        let _ = rmp::encode::write_uint(&mut payload, *n);
                    }
                    Val::Any(v) => {
                        let _ = rmpv::encode::write_value(&mut payload, v);
                    }
                }
            }
        }
        Form::Json => {
            let mut map = serde_json::Map::new();
            for (k, v) in &pairs {
                let v = match v {
                    Val::Str(s) => serde_json::Value::from(*s),
                    Val::Num(n) => serde_json::Value::from(*n),
                    Val::Any(v) => serde_json::to_value(v).unwrap_or_default(),
                };
                map.insert((*k).to_owned(), v);
            }
            // serde_json's map keeps keys sorted unless preserve_order: write by hand.
            payload.push(b'{');
            for (i, (k, _)) in pairs.iter().enumerate() {
                if i > 0 {
                    payload.push(b',');
                }
                payload.extend_from_slice(serde_json::to_string(k).unwrap_or_default().as_bytes());
                payload.push(b':');
                payload.extend_from_slice(map[*k].to_string().as_bytes());
            }
            payload.push(b'}');
        }
    }
    out.reserve(PREFIX_LEN + payload.len());
    out.put_u32(payload.len() as u32);
    out.extend_from_slice(&payload);
}

enum Val<'a> {
    Str(&'a str),
    Num(u64),
    Any(&'a rmpv::Value),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_frames_round_trip_in_both_codecs() {
        let frames = [
            Ext::Hello {
                s: None,
                n: 0,
                k: None,
                plain: false,
            },
            Ext::Hello {
                s: Some("0123456789abcdef0123456789abcdef".into()),
                n: 7,
                k: Some(rmpv::Value::from("token")),
                plain: false,
            },
            Ext::Hello {
                s: None,
                n: 0,
                k: Some(rmpv::Value::Map(vec![("user".into(), "ann".into())])),
                plain: true,
            },
            Ext::Admit,
            Ext::Deny("bad token".into()),
            Ext::Welcome {
                s: "ab".into(),
                n: 3,
                z: Outcome::Expired,
            },
            Ext::Ack(1 << 40),
            Ext::Ping(0),
            Ext::Pong(5),
        ];
        for form in [Form::MsgPack, Form::Json] {
            for ext in &frames {
                let mut out = BytesMut::new();
                put(form, ext, &mut out);
                let payload = &out[PREFIX_LEN..];
                assert!(is_ext(payload), "{form:?} {ext:?}");
                assert_eq!(decode(form, payload).as_ref(), Some(ext), "{form:?}");
            }
        }
        assert_eq!(
            decode(Form::Json, br#"{"x":"ack","n":12.0,"later":[1]}"#),
            Some(Ext::Ack(12))
        );
        assert_eq!(decode(Form::Json, br#"{"x":"what"}"#), Some(Ext::Other));
        assert!(!is_ext(br#"{"i":1,"x":"ack"}"#));
        // Keys in another order.
        assert!(is_ext(br#"{"n":5,"x":"ack"}"#));
        assert_eq!(
            decode(Form::Json, br#"{"n":5,"x":"ack"}"#),
            Some(Ext::Ack(5))
        );
        let mut packed = Vec::new();
        rmp::encode::write_map_len(&mut packed, 2).unwrap();
        rmp::encode::write_str(&mut packed, "n").unwrap();
        rmp::encode::write_uint(&mut packed, 5).unwrap();
        rmp::encode::write_str(&mut packed, "x").unwrap();
        rmp::encode::write_str(&mut packed, "ack").unwrap();
        assert!(is_ext(&packed));
        assert_eq!(decode(Form::MsgPack, &packed), Some(Ext::Ack(5)));
        // The first release's keyed bulk is data.
        assert!(!is_ext(br#"{"b":[{"i":1,"e":"x","a":[]}]}"#));
    }

    /// The bytes the protocol documentation shows.
    #[test]
    fn an_ack_is_written_as_documented() {
        let mut out = BytesMut::new();
        put(Form::MsgPack, &Ext::Ack(1043), &mut out);
        assert_eq!(
            out[PREFIX_LEN..],
            [0x82, 0xa1, 0x78, 0xa3, 0x61, 0x63, 0x6b, 0xa1, 0x6e, 0xcd, 0x04, 0x13]
        );
        let mut out = BytesMut::new();
        put(Form::Json, &Ext::Ack(1043), &mut out);
        assert_eq!(&out[PREFIX_LEN..], br#"{"x":"ack","n":1043}"#);
        let mut out = BytesMut::new();
        let welcome = Ext::Welcome {
            s: "ab".into(),
            n: 977,
            z: Outcome::Resumed,
        };
        put(Form::Json, &welcome, &mut out);
        assert_eq!(
            &out[PREFIX_LEN..],
            br#"{"x":"welcome","v":1,"s":"ab","n":977,"z":"resumed"}"#
        );
    }

    /// The authentication frames the protocol documentation shows.
    #[test]
    fn authentication_frames_are_written_as_documented() {
        let written = |form, ext: &Ext| {
            let mut out = BytesMut::new();
            put(form, ext, &mut out);
            out[PREFIX_LEN..].to_vec()
        };
        let hello = Ext::Hello {
            s: None,
            n: 0,
            k: Some("s3cr3t".into()),
            plain: true,
        };
        assert_eq!(
            written(Form::Json, &hello),
            br#"{"x":"hello","v":1,"p":1,"k":"s3cr3t"}"#
        );
        assert_eq!(
            written(Form::Json, &Ext::Admit),
            br#"{"x":"welcome","v":1}"#
        );
        assert_eq!(
            written(Form::MsgPack, &Ext::Admit),
            [0x82, 0xa1, 0x78, 0xa7, 0x77, 0x65, 0x6c, 0x63, 0x6f, 0x6d, 0x65, 0xa1, 0x76, 0x01]
        );
        assert_eq!(
            written(Form::Json, &Ext::Deny("unknown token".into())),
            br#"{"x":"deny","m":"unknown token"}"#
        );
        let resume = br#"{"x":"hello","v":1,"s":"5f0c","n":1042,"k":"s3cr3t"}"#;
        assert_eq!(
            decode(Form::Json, resume),
            Some(Ext::Hello {
                s: Some("5f0c".into()),
                n: 1042,
                k: Some("s3cr3t".into()),
                plain: false,
            })
        );
    }

    /// A data frame of either codec, single or in a bulk, is never taken
    /// for an extension frame, even for an event named `x`.
    #[test]
    fn data_frames_are_not_extension_frames() {
        for codec in [
            std::sync::Arc::new(crate::MsgPack) as std::sync::Arc<dyn crate::Codec>,
            std::sync::Arc::new(crate::Json),
        ] {
            for (buffering, form) in [
                (crate::Buffering::Off, crate::BulkForm::Array),
                (crate::Buffering::Idle, crate::BulkForm::Array),
                (crate::Buffering::Idle, crate::BulkForm::Keyed),
            ] {
                let router = crate::Router::builder()
                    .codec_arc(codec.clone())
                    .buffering(buffering)
                    .bulk_form(form)
                    .build();
                router.emit("x", ("x",)).unwrap();
                router.emit("x", ()).unwrap();
                let bytes = router.link().take_outgoing().unwrap();
                assert!(!is_ext(&bytes[PREFIX_LEN..]), "{codec:?} {buffering:?}");
            }
        }
    }
}
