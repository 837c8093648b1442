//! A trait's canonical schema: its events with their argument and reply
//! types, as JSON, and the hash of that JSON. Both are computed here, at
//! expansion, and become constants of the generated client: two builds of the
//! same trait give the same bytes.
//!
//! The form (described to users in `nmsg::contract`):
//!
//! ```text
//! {"trait":"Greeter","events":[{"event":"div","args":["f64","f64"],"reply":{"ok":"f64","err":"String"}},
//!                             {"event":"hello","args":["String"]},
//!                             {"event":"ping","args":[],"reply":{"value":"String"}}]}
//! ```
//!
//! Events are sorted by name, keys come in this order, there is no
//! whitespace; a type is written as in the trait with its paths shortened to
//! their last segment and its whitespace taken out (`Callback<(String,)>`).
//! The hash is FNV-1a 64 of the JSON's UTF-8 bytes, as 16 lowercase hex
//! digits.

use quote::ToTokens;
use syn::Type;

use crate::parse::{Output, ParamKind, Service};

/// The canonical JSON of `service`.
pub(crate) fn json(service: &Service) -> String {
    let mut events: Vec<(String, String)> = service
        .methods
        .iter()
        .map(|m| {
            let args: Vec<String> = m
                .params
                .iter()
                .filter(|p| p.kind != ParamKind::Peer)
                .map(|p| string(&type_text(&p.ty)))
                .collect();
            let mut event = format!(
                "{{\"event\":{},\"args\":[{}]",
                string(&m.event.value),
                args.join(",")
            );
            match &m.output {
                Output::None => {}
                Output::Value(ty) => event.push_str(&format!(
                    ",\"reply\":{{\"value\":{}}}",
                    string(&type_text(ty))
                )),
                Output::ErrorFirst { ok, err } => event.push_str(&format!(
                    ",\"reply\":{{\"ok\":{},\"err\":{}}}",
                    string(&type_text(ok)),
                    string(&type_text(err))
                )),
            }
            event.push('}');
            (m.event.value.clone(), event)
        })
        .collect();
    events.sort();
    let events: Vec<String> = events.into_iter().map(|(_, e)| e).collect();
    format!(
        "{{\"trait\":{},\"events\":[{}]}}",
        string(&service.item.ident.to_string()),
        events.join(",")
    )
}

/// FNV-1a 64 of `text`, as 16 lowercase hex digits.
pub(crate) fn hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A type as written, each path shortened to its last segment
/// (`std::string::String` is `String`, `nmsg::Callback<..>` is `Callback<..>`),
/// whitespace taken out.
pub(crate) fn type_text(ty: &Type) -> String {
    let mut ty = ty.clone();
    shorten(&mut ty);
    ty.to_token_stream()
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// Shortens every path in `ty` to its last segment.
fn shorten(ty: &mut Type) {
    match ty {
        Type::Path(p) if p.qself.is_none() => {
            if let Some(mut last) = p.path.segments.pop().map(|pair| pair.into_value()) {
                if let syn::PathArguments::AngleBracketed(args) = &mut last.arguments {
                    for arg in &mut args.args {
                        if let syn::GenericArgument::Type(t) = arg {
                            shorten(t);
                        }
                    }
                }
                p.path.segments.clear();
                p.path.leading_colon = None;
                p.path.segments.push(last);
            }
        }
        Type::Tuple(t) => t.elems.iter_mut().for_each(shorten),
        Type::Array(a) => shorten(&mut a.elem),
        Type::Slice(s) => shorten(&mut s.elem),
        Type::Paren(p) => shorten(&mut p.elem),
        Type::Group(g) => shorten(&mut g.elem),
        _ => {}
    }
}

/// A JSON string literal.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_1a_64_matches_the_published_values() {
        // The reference values of the FNV authors' test suite.
        assert_eq!(hash(""), "cbf29ce484222325");
        assert_eq!(hash("a"), "af63dc4c8601ec8c");
        assert_eq!(hash("foobar"), "85944171f73967e8");
    }

    #[test]
    fn strings_are_escaped_as_json() {
        assert_eq!(string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn the_schema_sorts_events_shortens_paths_and_drops_whitespace_and_peers() {
        let item: syn::ItemTrait = syn::parse_quote! {
            trait Greeter {
                async fn ping(&self) -> String;
                fn hello(&self, name: String, peer: Peer);
                async fn div(&self, a: f64, b: f64) -> Result<f64, String>;
                fn pick(&self, cb: ::nmsg::Callback<(Callback<(std::string::String,)>, bool)>);
            }
        };
        let mut errors = crate::parse::Errors::default();
        let service = crate::parse::service(proc_macro2::TokenStream::new(), item, &mut errors);
        assert!(errors.finish().is_ok());
        assert_eq!(
            json(&service),
            concat!(
                r#"{"trait":"Greeter","events":["#,
                r#"{"event":"div","args":["f64","f64"],"reply":{"ok":"f64","err":"String"}},"#,
                r#"{"event":"hello","args":["String"]},"#,
                r#"{"event":"pick","args":["Callback<(Callback<(String,)>,bool)>"]},"#,
                r#"{"event":"ping","args":[],"reply":{"value":"String"}}]}"#
            )
        );
    }
}
