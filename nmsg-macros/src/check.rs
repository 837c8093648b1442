//! The rules a trait must follow, one small `check_*` function per rule. Each
//! reports at the user's token that breaks it, and every rule runs, so the user
//! sees all problems at once.
//!
//! Only what can be seen in the tokens is checked here. Whether a type can be
//! sent is a question for the trait system: `expand` asserts
//! `T: nmsg::typed::WireArg` with the span of each type.

use std::collections::HashMap;

use syn::{FnArg, GenericArgument, PathArguments, ReturnType, Type, TypeParamBound};

use crate::parse::{is_peer, Errors, Method, Output, ParamKind, Service};

/// Method names the generated emitter uses for itself: a trait method with one
/// of these names would clash with (or shadow) it.
pub(crate) const RESERVED: &[&str] = &[
    "new",
    "router",
    "timeout",
    "with_timeout",
    "clone",
    "check_contract",
];

/// Event names nmsg keeps for itself: the contract of a trait is served on
/// `$nmsg.contract:<Trait>` (`nmsg::contract::RESERVED_PREFIX`).
pub(crate) const RESERVED_PREFIX: &str = "$nmsg.";

/// Runs every rule.
pub(crate) fn service(service: &Service, errors: &mut Errors) {
    check_trait_generics(service, errors);
    check_trait_items(service, errors);
    for method in &service.methods {
        check_receiver(method, errors);
        check_method_generics(method, errors);
        check_qualifiers(method, errors);
        check_reserved_name(method, errors);
        check_single_peer(method, errors);
        check_output(method, errors);
        for ty in method.wire_types() {
            check_owned(ty, errors);
            check_no_self(ty, errors);
            check_callback_tuples(ty, errors);
        }
    }
    check_event_names(service, errors);
}

/// The trait has no generics: its emitter and handlers are concrete.
fn check_trait_generics(service: &Service, errors: &mut Errors) {
    let generics = &service.item.generics;
    if !generics.params.is_empty() {
        errors.spanned(
            &generics.params,
            "an `#[nmsg::events]` trait cannot be generic: its events travel as concrete types; name the types in the methods",
        );
    }
}

/// The trait holds methods only.
fn check_trait_items(service: &Service, errors: &mut Errors) {
    for (tokens, kind) in &service.other_items {
        errors.spanned(
            tokens,
            format!("an `#[nmsg::events]` trait holds methods only, not this {kind}: each method is an event"),
        );
    }
}

/// A method takes `&self`: handlers run concurrently on a shared service.
fn check_receiver(method: &Method, errors: &mut Errors) {
    const HINT: &str = "handlers share the service (in an `Arc`) and run concurrently";
    match method.sig.inputs.first() {
        Some(FnArg::Receiver(r)) => {
            if r.colon_token.is_some() {
                errors.spanned(
                    r,
                    format!("write the receiver as `&self`; `self: Type` is not supported: {HINT}"),
                );
            } else if r.reference.is_none() {
                errors.spanned(
                    r,
                    format!("the receiver must be `&self`, not `self`: {HINT}, so none can take it by value"),
                );
            } else if r.mutability.is_some() {
                errors.spanned(
                    r,
                    format!("the receiver must be `&self`, not `&mut self`: {HINT}; keep mutable state behind a `Mutex` or an atomic"),
                );
            } else if let Some((_, Some(lifetime))) = &r.reference {
                errors.spanned(
                    lifetime,
                    "write the receiver as `&self`, without a lifetime",
                );
            }
        }
        _ => errors.at(
            method.sig.paren_token.span.join(),
            format!(
                "`{}` needs a `&self` receiver: every method of an `#[nmsg::events]` trait is an event handled by the service",
                method.sig.ident
            ),
        ),
    }
}

/// No generic methods: an event's argument types must be known to both ends.
fn check_method_generics(method: &Method, errors: &mut Errors) {
    let generics = &method.sig.generics;
    if !generics.params.is_empty() {
        errors.spanned(
            &generics.params,
            format!(
                "`{}` cannot be generic: an event's types must be known on both ends; name concrete types",
                method.sig.ident
            ),
        );
    } else if let Some(where_clause) = &generics.where_clause {
        errors.spanned(where_clause, "an event method cannot have a `where` clause");
    }
}

/// No `const`, `unsafe`, `extern` or variadic methods.
fn check_qualifiers(method: &Method, errors: &mut Errors) {
    let sig = &method.sig;
    if let Some(t) = &sig.constness {
        errors.at(t.span, "an event method cannot be `const`");
    }
    if let Some(t) = &sig.unsafety {
        errors.at(
            t.span,
            "an event method cannot be `unsafe`: its handler runs for whatever a peer sends, so no caller upholds a safety contract",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(abi, "an event method cannot have an ABI");
    }
    if let Some(v) = &sig.variadic {
        errors.spanned(v, "an event method cannot be variadic");
    }
}

/// A method name must not clash with the emitter's own methods.
fn check_reserved_name(method: &Method, errors: &mut Errors) {
    let name = method.sig.ident.to_string();
    if RESERVED.contains(&name.as_str()) {
        errors.at(
            method.sig.ident.span(),
            format!(
                "a method cannot be named `{name}`: the generated client has a method of that name; \
                 rename the method and keep the wire name with `#[nmsg(event = \"{}\")]`",
                method.event.value
            ),
        );
    }
}

/// At most one `Peer` parameter.
fn check_single_peer(method: &Method, errors: &mut Errors) {
    let mut peers = method.params.iter().filter(|p| p.kind == ParamKind::Peer);
    peers.next();
    for extra in peers {
        errors.spanned(&extra.ty, "a method takes at most one `Peer` parameter");
    }
}

/// The return type is a reply that can be answered through one callback.
fn check_output(method: &Method, errors: &mut Errors) {
    let ReturnType::Type(_, ty) = &method.sig.output else {
        return;
    };
    match &**ty {
        Type::Tuple(t) if t.elems.is_empty() => errors.spanned(
            ty,
            "`-> ()` makes no reply; remove it for an event without one, or return `Result<(), E>` \
             to have the caller wait until the handler is done (Node's `cb(null)`)",
        ),
        Type::Never(_) => errors.spanned(ty, "a reply cannot be `!`"),
        _ => {}
    }
    if let Output::Value(reply) | Output::ErrorFirst { ok: reply, .. } = &method.output {
        if is_peer(reply) {
            errors.spanned(
                reply,
                "a reply cannot be a `Peer`: `Peer` is the router an event came on, not data",
            );
        }
    }
}

/// Types travel by value: no references, no `impl Trait`.
fn check_owned(ty: &Type, errors: &mut Errors) {
    visit(ty, &mut |t| match t {
        Type::Reference(r) => {
            let owned = match &*r.elem {
                Type::Path(p) if p.path.is_ident("str") => "`String`".to_owned(),
                Type::Slice(s) => format!("`Vec<{}>`", quote::ToTokens::to_token_stream(&s.elem)),
                other => format!("`{}`", quote::ToTokens::to_token_stream(other)),
            };
            errors.spanned(
                r,
                format!("nmsg arguments are owned, since they are decoded from the wire: write {owned} instead"),
            );
            false
        }
        Type::ImplTrait(i) => {
            errors.spanned(
                i,
                "`impl Trait` cannot travel: name a concrete type (for a handler that awaits, write `async fn`)",
            );
            false
        }
        Type::TraitObject(o) if o.dyn_token.is_some() => {
            errors.spanned(o, "a trait object cannot travel: name a concrete type");
            false
        }
        Type::Ptr(p) => {
            errors.spanned(p, "a raw pointer cannot travel");
            false
        }
        _ => true,
    });
}

/// No `Self`: it would mean the service on one end and the client on the other.
fn check_no_self(ty: &Type, errors: &mut Errors) {
    visit(ty, &mut |t| match t {
        Type::Path(p)
            if p.qself.is_some() || p.path.segments.first().is_some_and(|s| s.ident == "Self") =>
        {
            errors.spanned(
                p,
                "`Self` cannot travel: it is the service type on one end only; name a concrete type",
            );
            false
        }
        _ => true,
    });
}

/// A callback's arguments are a tuple. `Callback<(T)>` is `Callback<T>`, so a
/// single argument needs a trailing comma; and `Callback<String>` (or another
/// type that is plainly not a tuple) is a callback of one argument, written
/// `Callback<(String,)>`. Other paths may be aliases of tuples: the trait
/// system judges those.
fn check_callback_tuples(ty: &Type, errors: &mut Errors) {
    /// Types that are never tuples, unless a user shadows their names.
    const NOT_TUPLES: &[&str] = &[
        "String", "str", "bool", "char", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16",
        "i32", "i64", "i128", "isize", "f32", "f64", "Vec", "Option", "Value", "HashMap",
        "BTreeMap", "Callback",
    ];
    visit(ty, &mut |t| {
        let Type::Path(p) = t else { return true };
        let Some(last) = p.path.segments.last() else {
            return true;
        };
        if last.ident != "Callback" {
            return true;
        }
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            return true;
        };
        for arg in &args.args {
            let inner = match arg {
                GenericArgument::Type(Type::Paren(paren)) => &*paren.elem,
                GenericArgument::Type(plain @ Type::Path(path))
                    if path.qself.is_none()
                        && path.path.segments.last().is_some_and(|s| {
                            NOT_TUPLES.contains(&s.ident.to_string().as_str())
                        }) =>
                {
                    plain
                }
                _ => continue,
            };
            let inner_text = quote::ToTokens::to_token_stream(inner).to_string();
            errors.spanned(
                arg,
                format!(
                    "a callback's arguments are a tuple: write `Callback<({inner_text},)>`, with a comma, for one argument"
                ),
            );
        }
        true
    });
}

/// Event names are not empty, not the wildcard, not nmsg's own, and unique.
fn check_event_names(service: &Service, errors: &mut Errors) {
    let mut seen: HashMap<&str, &Method> = HashMap::new();
    for method in &service.methods {
        let name = method.event.value.as_str();
        if name.is_empty() {
            errors.at(method.event.span, "an event name cannot be empty");
            continue;
        }
        if name == "*" {
            errors.at(
                method.event.span,
                "`*` is the wildcard event, which sees every event; give the method another name",
            );
            continue;
        }
        if name.starts_with(RESERVED_PREFIX) {
            errors.at(
                method.event.span,
                format!(
                    "event names starting with `{RESERVED_PREFIX}` are nmsg's own (a trait's contract is served on `{RESERVED_PREFIX}contract:<Trait>`); give the method another name with `#[nmsg(event = \"..\")]`"
                ),
            );
            continue;
        }
        if let Some(first) = seen.get(name) {
            errors.at(
                method.event.span,
                format!(
                    "the event name `{name}` is already used by method `{}`; give one of them another name with `#[nmsg(event = \"..\")]`",
                    first.sig.ident
                ),
            );
        } else {
            seen.insert(name, method);
        }
    }
}

/// Calls `f` on `ty` and, while `f` says so, on every type inside it.
fn visit(ty: &Type, f: &mut dyn FnMut(&Type) -> bool) {
    if !f(ty) {
        return;
    }
    match ty {
        Type::Array(a) => visit(&a.elem, f),
        Type::Group(g) => visit(&g.elem, f),
        Type::Paren(p) => visit(&p.elem, f),
        Type::Ptr(p) => visit(&p.elem, f),
        Type::Reference(r) => visit(&r.elem, f),
        Type::Slice(s) => visit(&s.elem, f),
        Type::Tuple(t) => t.elems.iter().for_each(|e| visit(e, f)),
        Type::Path(p) => {
            if let Some(q) = &p.qself {
                visit(&q.ty, f);
            }
            for segment in &p.path.segments {
                match &segment.arguments {
                    PathArguments::AngleBracketed(args) => {
                        for arg in &args.args {
                            match arg {
                                GenericArgument::Type(t) => visit(t, f),
                                GenericArgument::AssocType(a) => visit(&a.ty, f),
                                _ => {}
                            }
                        }
                    }
                    PathArguments::Parenthesized(args) => {
                        args.inputs.iter().for_each(|t| visit(t, f));
                        if let ReturnType::Type(_, t) = &args.output {
                            visit(t, f);
                        }
                    }
                    PathArguments::None => {}
                }
            }
        }
        Type::TraitObject(o) => visit_bounds(o.bounds.iter(), f),
        Type::ImplTrait(i) => visit_bounds(i.bounds.iter(), f),
        _ => {}
    }
}

fn visit_bounds<'a>(
    bounds: impl Iterator<Item = &'a TypeParamBound>,
    f: &mut dyn FnMut(&Type) -> bool,
) {
    for bound in bounds {
        if let TypeParamBound::Trait(t) = bound {
            let ty = Type::Path(syn::TypePath {
                qself: None,
                path: t.path.clone(),
            });
            visit(&ty, f);
        }
    }
}
