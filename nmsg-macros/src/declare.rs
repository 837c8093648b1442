//! The trait described for other languages: `impl<X> Declare<X> for
//! <Trait>Client where X: Describe<T> ..`, one bound per type the trait
//! names. The bounds are on `X`, so they are checked only where a describer
//! is given (`nmsg::typescript::declarations::<GreeterClient>()`): a trait
//! whose types have no TypeScript description compiles as before.
//!
//! Callbacks and the containers around them are read here by their shape,
//! since a callback is a function type in TypeScript and not data; so are a
//! few types whose TypeScript form the macro knows by name (`Value`,
//! `ByteBuf`, `Bytes`), which do not implement `ts_rs::TS`. Every other type
//! is a leaf, described by `X`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::{Attribute, GenericArgument, Ident, PathArguments, Type};

use crate::parse::{Output, ParamKind, Service};

pub(crate) fn declare(service: &Service, client: &Ident) -> TokenStream {
    let krate = &service.options.krate;
    let p = quote!(#krate::typed::__private);
    let private = p.clone();
    let x = Ident::new("__NmsgX", Span::call_site());
    let describer = Ident::new("__nmsg_x", Span::mixed_site());
    let mut leaves: Vec<Type> = Vec::new();
    let name = service.item.ident.to_string();
    let trait_docs = docs(&service.item.attrs);
    // A method under `#[cfg(..)]` is left out: its types may not exist, and a
    // bound cannot be conditional.
    let described = service
        .methods
        .iter()
        .filter(|m| !m.attrs.iter().any(|a| a.path().is_ident("cfg")));
    let events = described.map(|m| {
        let event = &m.event.value;
        let method_docs = docs(&m.attrs);
        let params = m
            .params
            .iter()
            .filter(|p| p.kind != ParamKind::Peer)
            .map(|p| {
                let name = p.ident.to_string();
                let name = name.strip_prefix("r#").unwrap_or(&name).to_owned();
                let ty = ts(&p.ty, &private, &x, &describer, &mut leaves);
                quote!((#name, #ty))
            });
        let params: Vec<TokenStream> = params.collect();
        let reply = match &m.output {
            Output::None => quote!(#p::ReplyDecl::None),
            Output::Value(ty) => {
                let ty = ts(ty, &private, &x, &describer, &mut leaves);
                quote!(#p::ReplyDecl::Value(#ty))
            }
            Output::ErrorFirst { ok, err } => {
                let ok = if matches!(ok, Type::Tuple(t) if t.elems.is_empty()) {
                    quote!(::core::option::Option::None)
                } else {
                    let ok = ts(ok, &private, &x, &describer, &mut leaves);
                    quote!(::core::option::Option::Some(#ok))
                };
                let err = ts(err, &private, &x, &describer, &mut leaves);
                quote!(#p::ReplyDecl::ErrorFirst { ok: #ok, err: #err })
            }
        };
        quote! {
            #p::EventDecl {
                event: #event,
                docs: #method_docs,
                params: ::std::vec![#(#params),*],
                reply: #reply,
            }
        }
    });
    let events: Vec<TokenStream> = events.collect();
    let mut seen = std::collections::HashSet::new();
    let bounds = leaves
        .iter()
        .filter(|t| seen.insert(t.to_token_stream().to_string()))
        .map(|t| quote!(#x: #p::Describe<#t>));
    quote! {
        #[allow(clippy::type_complexity)]
        impl<#x> #p::Declare<#x> for #client where #(#bounds),* {
            fn declare(#describer: &mut #x) -> #p::TraitDecl {
                #p::TraitDecl {
                    name: #name,
                    docs: #trait_docs,
                    events: ::std::vec![#(#events),*],
                }
            }
        }
    }
}

/// The `Ts` value that describes `ty`; the leaves it leaves to `X` are pushed on `leaves`.
fn ts(
    ty: &Type,
    p: &TokenStream,
    x: &Ident,
    describer: &Ident,
    leaves: &mut Vec<Type>,
) -> TokenStream {
    let mut recurse = |t: &Type| ts(t, p, x, describer, leaves);
    match ty {
        Type::Paren(t) => return recurse(&t.elem),
        Type::Group(t) => return recurse(&t.elem),
        Type::Tuple(t) if t.elems.is_empty() => {
            return quote!(#p::Ts::Known("null"));
        }
        Type::Tuple(t) => {
            let elems: Vec<TokenStream> = t.elems.iter().map(&mut recurse).collect();
            return quote!(#p::Ts::Tuple(::std::vec![#(#elems),*]));
        }
        Type::Array(a) => {
            let elem = recurse(&a.elem);
            return quote!(#p::Ts::Array(::std::boxed::Box::new(#elem)));
        }
        Type::Path(path) if path.qself.is_none() => {
            if let Some(last) = path.path.segments.last() {
                let name = last.ident.to_string();
                let args = type_args(&last.arguments);
                match (name.as_str(), args.as_slice()) {
                    ("Value", []) => return quote!(#p::Ts::Known("unknown")),
                    ("ByteBuf" | "Bytes", []) => return quote!(#p::Ts::Known("Buffer")),
                    ("Callback", [Type::Tuple(t)]) => {
                        let elems: Vec<TokenStream> = t.elems.iter().map(&mut recurse).collect();
                        return quote!(#p::Ts::Callback(::std::vec![#(#elems),*]));
                    }
                    ("Option", [inner]) => {
                        let inner = recurse(inner);
                        return quote!(#p::Ts::Option(::std::boxed::Box::new(#inner)));
                    }
                    ("Vec" | "VecDeque", [inner]) => {
                        let inner = recurse(inner);
                        return quote!(#p::Ts::Array(::std::boxed::Box::new(#inner)));
                    }
                    ("Box" | "Arc" | "Rc", [inner]) => return recurse(inner),
                    ("HashMap" | "BTreeMap", [k, v, ..]) => {
                        let (k, v) = (recurse(k), recurse(v));
                        return quote!(#p::Ts::Map(
                            ::std::boxed::Box::new(#k),
                            ::std::boxed::Box::new(#v)
                        ));
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    leaves.push(ty.clone());
    quote!(#p::Ts::Described(
        <#x as #p::Describe<#ty>>::describe(#describer)
    ))
}

fn type_args(args: &PathArguments) -> Vec<&Type> {
    match args {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The doc comment of `attrs`, its lines joined.
fn docs(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|line| line.strip_prefix(' ').unwrap_or(&line).to_owned())
        .collect();
    lines.join("\n").trim().to_owned()
}
