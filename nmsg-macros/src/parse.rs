//! The front end: a trait's tokens into a [`Service`], a model that keeps the
//! user's spans. Parsing only reads; whether what it read is allowed is
//! `check`'s job, so that every problem can be reported at once.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Pat, Path, PathArguments,
    ReturnType, Signature, TraitItem, Type,
};

use crate::case::{RenameRule, RULES};

/// Errors collected along the way, reported together.
#[derive(Default)]
pub(crate) struct Errors {
    errors: Option<syn::Error>,
}

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.errors {
            Some(errors) => errors.combine(error),
            None => self.errors = Some(error),
        }
    }

    pub(crate) fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// An error over the whole of `tokens`, first to last.
    pub(crate) fn spanned(
        &mut self,
        tokens: impl quote::ToTokens,
        message: impl std::fmt::Display,
    ) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn finish(self) -> Result<(), syn::Error> {
        self.errors.map_or(Ok(()), Err)
    }
}

/// The trait `#[nmsg::events]` is on.
pub(crate) struct Service {
    /// The trait as written, with the `#[nmsg(..)]` attributes taken out.
    pub(crate) item: ItemTrait,
    pub(crate) options: Options,
    pub(crate) methods: Vec<Method>,
    /// Items other than methods (associated types, consts, macros), by span and kind.
    pub(crate) other_items: Vec<(TokenStream, &'static str)>,
}

/// The options of `#[nmsg::events(..)]`.
pub(crate) struct Options {
    pub(crate) rename_all: Option<RenameRule>,
    /// The path of the nmsg crate in generated code (`crate = ".."`, default `::nmsg`).
    pub(crate) krate: Path,
}

/// One method of the trait.
pub(crate) struct Method {
    /// Its attributes, `#[nmsg(..)]` taken out.
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) sig: Signature,
    pub(crate) event: EventName,
    pub(crate) params: Vec<Param>,
    pub(crate) output: Output,
}

impl Method {
    /// Every type that travels: the wire parameters' and the reply's.
    pub(crate) fn wire_types(&self) -> Vec<&Type> {
        let mut types: Vec<&Type> = self
            .params
            .iter()
            .filter(|p| p.kind != ParamKind::Peer)
            .map(|p| &p.ty)
            .collect();
        match &self.output {
            Output::None => {}
            Output::Value(ty) => types.push(ty),
            Output::ErrorFirst { ok, err } => types.extend([ok, err]),
        }
        types
    }
}

/// The name a method has on the wire.
pub(crate) struct EventName {
    pub(crate) value: String,
    /// The `event = ".."` literal, or the method's name.
    pub(crate) span: Span,
}

/// A parameter after the receiver.
pub(crate) struct Param {
    /// The parameter's name, or a made-up one for `_`.
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    pub(crate) kind: ParamKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamKind {
    /// A wire argument, at this position of the event's argument list.
    Wire(usize),
    /// `peer: Peer`: the router the event arrived on, not sent.
    Peer,
}

/// What a method answers.
// A handful per trait, built once: boxing the types would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Output {
    /// No return type: an event without a reply.
    None,
    /// `-> T`: the trailing callback gets `(value)`.
    Value(Type),
    /// `-> Result<T, E>`: the trailing callback gets `(null, value)` or `(err)`.
    ErrorFirst { ok: Type, err: Type },
}

/// Parses the macro's arguments and the trait.
pub(crate) fn service(args: TokenStream, mut item: ItemTrait, errors: &mut Errors) -> Service {
    let options = options(args, errors);
    let mut methods = Vec::new();
    let mut other_items = Vec::new();
    for trait_item in &mut item.items {
        match trait_item {
            TraitItem::Fn(f) => {
                let (attrs, event) = method_attrs(&f.attrs, errors);
                f.attrs.retain(|a| !is_nmsg(a));
                for input in &mut f.sig.inputs {
                    if let FnArg::Typed(pt) = input {
                        pt.attrs.retain(|a| !is_nmsg(a));
                    }
                }
                let event = match event {
                    Some(lit) => EventName {
                        value: lit.value(),
                        span: lit.span(),
                    },
                    None => {
                        let name = f.sig.ident.to_string();
                        let name = name.strip_prefix("r#").unwrap_or(&name);
                        EventName {
                            value: options
                                .rename_all
                                .map_or_else(|| name.to_owned(), |rule| rule.apply(name)),
                            span: f.sig.ident.span(),
                        }
                    }
                };
                methods.push(Method {
                    attrs,
                    params: params(&f.sig),
                    output: output(&f.sig.output),
                    sig: f.sig.clone(),
                    event,
                });
            }
            TraitItem::Type(t) => other_items.push((t.to_token_stream(), "associated type")),
            TraitItem::Const(c) => other_items.push((c.to_token_stream(), "associated const")),
            TraitItem::Macro(m) => other_items.push((m.to_token_stream(), "macro invocation")),
            other => other_items.push((other.to_token_stream(), "item")),
        }
    }
    item.attrs.retain(|a| {
        if is_nmsg(a) {
            errors.spanned(
                a,
                "trait options go in the macro's own arguments: `#[nmsg::events(rename_all = \"..\")]`",
            );
        }
        !is_nmsg(a)
    });
    Service {
        item,
        options,
        methods,
        other_items,
    }
}

/// Takes the `#[nmsg(..)]` attributes out of a trait, for the output that
/// goes with errors (so that the user's code still sees the trait).
pub(crate) fn strip(mut item: ItemTrait) -> ItemTrait {
    item.attrs.retain(|a| !is_nmsg(a));
    for trait_item in &mut item.items {
        if let TraitItem::Fn(f) = trait_item {
            f.attrs.retain(|a| !is_nmsg(a));
            for input in &mut f.sig.inputs {
                if let FnArg::Typed(pt) = input {
                    pt.attrs.retain(|a| !is_nmsg(a));
                }
            }
        }
    }
    item
}

fn is_nmsg(attr: &Attribute) -> bool {
    attr.path().is_ident("nmsg")
}

fn options(args: TokenStream, errors: &mut Errors) -> Options {
    let mut options = Options {
        rename_all: None,
        krate: syn::parse_quote!(::nmsg),
    };
    let mut seen_rename = false;
    let mut seen_crate = false;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("rename_all") {
            let lit: LitStr = meta.value()?.parse()?;
            if std::mem::replace(&mut seen_rename, true) {
                return Err(meta.error("`rename_all` is given twice"));
            }
            match RenameRule::from_name(&lit.value()) {
                Some(rule) => options.rename_all = Some(rule),
                None => {
                    let names: Vec<String> =
                        RULES.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                    let close = RenameRule::closest(&lit.value())
                        .map(|name| format!("did you mean \"{name}\"? "))
                        .unwrap_or_default();
                    errors.at(
                        lit.span(),
                        format!(
                            "unknown rename rule `{}`; {close}the rules are {}",
                            lit.value(),
                            names.join(", ")
                        ),
                    );
                }
            }
            Ok(())
        } else if meta.path.is_ident("crate") {
            let lit: LitStr = meta.value()?.parse()?;
            if std::mem::replace(&mut seen_crate, true) {
                return Err(meta.error("`crate` is given twice"));
            }
            options.krate = lit.parse()?;
            Ok(())
        } else {
            Err(meta.error(format!(
                "unknown option `{}` of `#[nmsg::events]`; the options are `rename_all = \"..\"` and `crate = \"..\"`",
                path_name(&meta.path)
            )))
        }
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        errors.push(e);
    }
    options
}

/// A method's attributes without `#[nmsg(..)]`, and its `event = ".."`.
fn method_attrs(attrs: &[Attribute], errors: &mut Errors) -> (Vec<Attribute>, Option<LitStr>) {
    let mut event: Option<LitStr> = None;
    for attr in attrs.iter().filter(|a| is_nmsg(a)) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("event") {
                let lit: LitStr = meta.value()?.parse()?;
                if event.is_some() {
                    return Err(syn::Error::new(lit.span(), "the event name is given twice"));
                }
                event = Some(lit);
                Ok(())
            } else {
                Err(meta.error(format!(
                    "unknown method option `{}`; a method takes `#[nmsg(event = \"wire-name\")]`",
                    path_name(&meta.path)
                )))
            }
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    let others = attrs.iter().filter(|a| !is_nmsg(a)).cloned().collect();
    (others, event)
}

fn path_name(path: &Path) -> String {
    let names: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    names.join("::")
}

fn params(sig: &Signature) -> Vec<Param> {
    let mut wire = 0;
    sig.inputs
        .iter()
        .enumerate()
        .filter_map(|(i, input)| match input {
            FnArg::Receiver(_) => None,
            FnArg::Typed(pt) => {
                let ident = match &*pt.pat {
                    Pat::Ident(p) if p.subpat.is_none() && p.by_ref.is_none() => p.ident.clone(),
                    _ => quote::format_ident!("arg{}", i, span = pt.pat.span()),
                };
                let kind = if is_peer(&pt.ty) {
                    ParamKind::Peer
                } else {
                    wire += 1;
                    ParamKind::Wire(wire - 1)
                };
                Some(Param {
                    ident,
                    ty: (*pt.ty).clone(),
                    kind,
                })
            }
        })
        .collect()
}

/// `Peer`, `nmsg::Peer`, `::nmsg::typed::Peer`, ..: a path ending in `Peer`.
pub(crate) fn is_peer(ty: &Type) -> bool {
    match ty {
        Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "Peer" && s.arguments.is_none()),
        Type::Group(g) => is_peer(&g.elem),
        _ => false,
    }
}

fn output(output: &ReturnType) -> Output {
    let ty = match output {
        ReturnType::Default => return Output::None,
        ReturnType::Type(_, ty) => &**ty,
    };
    if let Some((ok, err)) = result_types(ty) {
        return Output::ErrorFirst { ok, err };
    }
    Output::Value(ty.clone())
}

/// `Result<T, E>` (any path ending in `Result` with two type arguments).
fn result_types(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let types: Vec<&Type> = args
        .args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    match (types.as_slice(), args.args.len()) {
        ([ok, err], 2) => Some(((*ok).clone(), (*err).clone())),
        _ => None,
    }
}
