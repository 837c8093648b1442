//! Strings that msgpack-lite 0.1 wrote: characters outside the Basic
//! Multilingual Plane as two 3-byte surrogate sequences (CESU-8), which is not
//! valid UTF-8.
//!
//! Decoding an argument does not look for them: serde's MsgPack reader hands
//! a string that is not valid UTF-8 on as bytes, and the argument decoder
//! notes bytes whose first break of UTF-8 is a surrogate. Only then are the
//! argument's `str` values looked at here (binary values are stepped over by
//! their length), each CESU-8 one rewritten as the UTF-8 of the characters it
//! means, and the argument decoded again if any was.

use std::borrow::Cow;

/// `raw`, one MsgPack value, with each `str` that is CESU-8 but not UTF-8
/// rewritten as UTF-8; `None` when there is none (or `raw` is cut short:
/// then decoding it fails as it did). Other invalid strings stay as they are,
/// and still fail to decode as strings.
pub(crate) fn utf8_from_cesu8(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut changed = false;
    let mut pos = 0;
    while pos < raw.len() {
        let (head, len, is_str) = token(raw, pos)?;
        let body = raw.get(pos + head..pos + head + len)?;
        let fixed = match is_str && std::str::from_utf8(body).is_err() {
            true => match cesu8::from_cesu8(body) {
                Ok(Cow::Owned(text)) => Some(text),
                _ => None,
            },
            false => None,
        };
        match fixed {
            Some(text) => {
                if !changed {
                    changed = true;
                    out.reserve(raw.len());
                    out.extend_from_slice(&raw[..pos]);
                }
                put_str_header(&mut out, text.len());
                out.extend_from_slice(text.as_bytes());
            }
            None if changed => out.extend_from_slice(&raw[pos..pos + head + len]),
            None => {}
        }
        pos += head + len;
    }
    changed.then_some(out)
}

/// The token at `pos`: its header's length, the length of the bytes it
/// carries after the header, and whether it is a string. A container's
/// elements are the tokens after its header, so a value is read as the flat
/// run of its tokens, without recursion.
fn token(raw: &[u8], pos: usize) -> Option<(usize, usize, bool)> {
    let marker = *raw.get(pos)?;
    let n = |width: usize| -> Option<usize> {
        let b = raw.get(pos + 1..pos + 1 + width)?;
        Some(b.iter().fold(0usize, |n, &b| n << 8 | b as usize))
    };
    Some(match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, false),
        0x80..=0x9f => (1, 0, false),
        0xa0..=0xbf => (1, (marker & 0x1f) as usize, true),
        0xd9 => (2, n(1)?, true),
        0xda => (3, n(2)?, true),
        0xdb => (5, n(4)?, true),
        0xc4 => (2, n(1)?, false),
        0xc5 => (3, n(2)?, false),
        0xc6 => (5, n(4)?, false),
        // ext: the length, then a type byte
        0xc7 => (3, n(1)?, false),
        0xc8 => (4, n(2)?, false),
        0xc9 => (6, n(4)?, false),
        0xca => (5, 0, false),
        0xcb => (9, 0, false),
        0xcc | 0xd0 => (2, 0, false),
        0xcd | 0xd1 => (3, 0, false),
        0xce | 0xd2 => (5, 0, false),
        0xcf | 0xd3 => (9, 0, false),
        0xd4 => (3, 0, false),
        0xd5 => (4, 0, false),
        0xd6 => (6, 0, false),
        0xd7 => (10, 0, false),
        0xd8 => (18, 0, false),
        0xdc | 0xde => (3, 0, false),
        0xdd | 0xdf => (5, 0, false),
        0xc1 => return None,
    })
}

/// A `str` header for `len` bytes, in its shortest form.
fn put_str_header(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=31 => out.push(0xa0 | len as u8),
        32..=0xff => out.extend_from_slice(&[0xd9, len as u8]),
        0x100..=0xffff => {
            out.push(0xda);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::utf8_from_cesu8;

    /// "a🌍" as msgpack-lite 0.1.17 writes it (the seed release's vector).
    const CESU: &[u8] = &[0xa7, 0x61, 0xed, 0xa0, 0xbc, 0xed, 0xbc, 0x8d];

    #[test]
    fn a_cesu8_string_becomes_utf8() {
        let fixed = utf8_from_cesu8(CESU).unwrap();
        let text: String = rmp_serde::from_slice(&fixed).unwrap();
        assert_eq!(text, "a🌍");
    }

    #[test]
    fn strings_inside_containers_are_rewritten_and_the_rest_kept() {
        // [1, {"k": "a🌍"}, bin [0xed, 0xa0, 0xbc], "ok", 2.5]
        let mut raw = vec![0x95, 0x01, 0x81, 0xa1, b'k'];
        raw.extend_from_slice(CESU);
        raw.extend_from_slice(&[0xc4, 3, 0xed, 0xa0, 0xbc, 0xa2, b'o', b'k']);
        raw.extend_from_slice(&[0xcb, 0x40, 0x04, 0, 0, 0, 0, 0, 0]);
        let fixed = utf8_from_cesu8(&raw).unwrap();
        let value: rmpv::Value = rmp_serde::from_slice(&fixed).unwrap();
        assert_eq!(
            value,
            rmpv::Value::Array(vec![
                1.into(),
                rmpv::Value::Map(vec![("k".into(), "a🌍".into())]),
                rmpv::Value::Binary(vec![0xed, 0xa0, 0xbc]),
                "ok".into(),
                2.5.into(),
            ])
        );
    }

    #[test]
    fn nothing_to_rewrite_gives_none() {
        for raw in [
            &[0xa2, b'o', b'k'][..],
            &[0xc4, 3, 0xed, 0xa0, 0xbc],
            // Invalid UTF-8 that is not CESU-8 either stays as it is.
            &[0xa2, 0xff, 0xfe],
            // Cut short.
            &[0xa7, 0x61, 0xed, 0xa0],
            &[0xc1],
        ] {
            assert_eq!(utf8_from_cesu8(raw), None, "{raw:x?}");
        }
    }

    #[test]
    fn long_strings_get_a_header_of_their_size() {
        let mut text = String::from("x").repeat(300);
        text.push('🌍');
        let cesu = cesu8::to_cesu8(&text);
        let mut raw = vec![0xda];
        raw.extend_from_slice(&(cesu.len() as u16).to_be_bytes());
        raw.extend_from_slice(&cesu);
        let back: String = rmp_serde::from_slice(&utf8_from_cesu8(&raw).unwrap()).unwrap();
        assert_eq!(back, text);
    }
}
