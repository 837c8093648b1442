//! Procedural macros for [nmsg](https://docs.rs/nmsg): `#[nmsg::events]`.
//!
//! Use them through the `nmsg` crate, which re-exports them. The crate is split
//! as serde_derive is: this file holds the entry point, `parse` reads the trait
//! into a model that keeps the user's spans, `check` applies one rule per
//! function and collects every error, and `expand` generates the code.

#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

mod case;
mod check;
mod declare;
mod expand;
mod parse;
mod schema;

use proc_macro::TokenStream;
use quote::ToTokens;

/// Turns a trait into typed events: a typed emitter, `<Trait>Client`, and a
/// handler adapter, `<Trait>Api`, that lower to the same frames as dynamic
/// `Router::emit` and `Router::on`.
///
/// ```
/// use nmsg::Callback;
///
/// #[nmsg::events]
/// pub trait Greeter {
///     /// An event with no reply.
///     fn hello(&self, name: String);
///     /// A reply: a trailing callback that the handler's return value invokes.
///     async fn ping(&self) -> String;
///     /// Node's error-first convention: `cb(null, quotient)` or `cb(error)`.
///     async fn div(&self, a: f64, b: f64) -> Result<f64, String>;
///     /// Explicit callbacks, nested; the event has another name on the wire.
///     #[nmsg(event = "pick-hand")]
///     fn pick_hand(
///         &self,
///         hands: Callback<(Callback<(Callback<(String,)>,)>, Callback<(Callback<(String,)>,)>)>,
///     );
/// }
///
/// struct MyGreeter;
///
/// impl Greeter for MyGreeter {
///     fn hello(&self, name: String) {
///         println!("hello, {name}");
///     }
///     async fn ping(&self) -> String {
///         "pong".into()
///     }
///     async fn div(&self, a: f64, b: f64) -> Result<f64, String> {
///         if b == 0.0 { Err("division by zero".into()) } else { Ok(a / b) }
///     }
///     fn pick_hand(
///         &self,
///         hands: Callback<(Callback<(Callback<(String,)>,)>, Callback<(Callback<(String,)>,)>)>,
///     ) {
///         let hand = |colour: &'static str| {
///             Callback::new(move |(reply,): (Callback<(String,)>,)| {
///                 let _ = reply.call((colour.to_string(),));
///             })
///         };
///         let _ = hands.call((hand("white"), hand("black")));
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nmsg::Error> {
/// let (client, server, _link) = nmsg::transport::memory::pair();
/// GreeterApi::new(MyGreeter).serve(&server);
///
/// let greeter = GreeterClient::new(&client);
/// greeter.hello("Ann".into())?;
/// assert_eq!(greeter.ping().await?, "pong");
/// assert_eq!(greeter.div(6.0, 3.0).await?, Ok(2.0));
/// assert_eq!(greeter.div(1.0, 0.0).await?, Err("division by zero".to_string()));
///
/// let (hands, picked) = Callback::once();
/// greeter.pick_hand(hands)?;
/// let (left, _right) = picked.await?;
/// let (colour, reply) = Callback::once();
/// left.call((colour,))?;
/// assert_eq!(reply.await?.0, "white");
/// # Ok(()) }
/// ```
///
/// # What is generated
///
/// - **The trait**, with `Send + Sync + 'static` added to its supertraits (a
///   server shares one service among its connections) and each `async fn`
///   declared as `fn .. -> impl Future<Output = T> + Send` (handlers are spawned
///   on the multi-thread runtime). Implementations write `async fn` as usual;
///   the compiler checks that their futures are `Send`.
/// - **`<Trait>Client`**, a typed emitter over a router, cheap to clone:
///   `new(&router)`, `router()`, `with_timeout(duration)`, the constant
///   `EVENTS`, and one method per trait method, taking the wire parameters.
///   The trait's contract (`nmsg::contract`): the constants `SCHEMA` (the
///   events with their argument and reply types, as canonical JSON),
///   `SCHEMA_HASH` and `CONTRACT_EVENT` (`$nmsg.contract:<Trait>`), and
///   `check_contract()`, which compares the peer's schema with this one.
///   And the trait's description for other languages: with nmsg's
///   `typescript` feature, `nmsg::typescript::declarations::<TraitClient>()`
///   is its `.d.ts`.
/// - **`<Trait>Api<S>`**, serving any `S: Trait`: `new(service)`,
///   `from_arc(arc)`, `serve(&router)` (as `on` handlers, beside others),
///   `into_api()` (a shared `nmsg::Api` for every socket of a server; also
///   `Api::from`), and `register(&table)` for either. Each also answers the
///   trait's `CONTRACT_EVENT` with its schema.
///
/// # How each method lowers to frames
///
/// | method | emitter | frame sent | handler |
/// |---|---|---|---|
/// | `fn hello(&self, name: String)` | `hello(name) -> Result<(), Error>` once queued | `{e: "hello", a: [name]}` | runs `hello(name)`; no answer |
/// | `async fn ping(&self) -> String` | `ping() -> Response<String>` | `{e: "ping", a: [], c: [0]}` | `cb(value)` |
/// | `async fn div(&self, a: f64, b: f64) -> Result<f64, String>` | `div(a, b) -> Response<Result<f64, String>>` | `{e: "div", a: [a, b], c: [2]}` | `cb(null, value)` or `cb(error)` |
/// | `fn pick_hand(&self, hands: Callback<(..)>)` | `pick_hand(hands)` | `{e: "pick-hand", a: [], c: [0]}` | gets the peer's callback |
///
/// - **No return type**: an event without a reply. `async` only says that the
///   handler is spawned instead of running on the connection's reader task.
/// - **`-> T`**: the emitter appends a trailing callback after the wire
///   arguments, and the handler's value invokes it with one argument. The emitter
///   returns a `Response<T>` (`nmsg::Response`), a future of `Result<T, nmsg::Error>`
///   that ends with `Timeout`, `Disconnected`, `Closed`, or `Argument` when the
///   answer does not decode. The frame is queued when the method is called.
/// - **`-> Result<T, E>`** (a path ending in `Result`, with two type arguments):
///   Node's error-first convention. `Ok(v)` answers `cb(null, v)` (`cb(null)` when
///   `T` is `()`), `Err(e)` answers `cb(e)`; so a JavaScript handler writes
///   `cb(null, 'pong')`. The emitter's `Response<Result<T, E>>` keeps the remote
///   `E` apart from transport errors: `client.div(1.0, 0.0).await?` is the
///   handler's `Result`.
/// - **`Callback<(A, B, ..)>` parameters**, in any position and any number, whose
///   arguments may be callbacks again, to any depth. The emitter passes one built
///   with `Callback::new(closure)` or `Callback::once()`; the handler gets the
///   peer's callback, and `call` consumes it, so it is invoked at most once.
///   Wrong argument types, arity or nesting do not compile.
/// - **A `Peer` parameter** (a type whose path ends in `Peer`, normally
///   `nmsg::Peer`), in any position: the router the event arrived on, to emit back
///   on the same connection. It is not sent, and the emitter's method omits it.
///
/// # Options
///
/// - `#[nmsg(event = "pick-hand")]` on a method: its name on the wire (default:
///   the method's name).
/// - `#[nmsg::events(rename_all = "kebab-case")]` on the trait: renames every
///   method without an `event`, with one of `"lowercase"`, `"UPPERCASE"`,
///   `"PascalCase"`, `"camelCase"`, `"snake_case"`, `"SCREAMING_SNAKE_CASE"`,
///   `"kebab-case"`, `"SCREAMING-KEBAB-CASE"`.
/// - `#[nmsg::events(crate = "path::to::nmsg")]`: where the nmsg crate is, when it
///   is not `::nmsg` (a renamed dependency, or a re-export).
///
/// # Compile-time checks
///
/// All errors are reported at once, each at the user's token: a receiver other
/// than `&self`; generic methods or traits; items other than methods; `const`,
/// `unsafe` or `extern` methods; references, `impl Trait`, `dyn Trait` or `Self`
/// in a type that travels; `-> ()`; `Callback<(T)>` without the tuple's comma;
/// more than one `Peer`; empty, wildcard (`*`) or duplicate event names, and
/// names starting with `$nmsg.` (nmsg's own: the contract's); method names the
/// emitter uses itself (`new`, `router`, `timeout`, `with_timeout`, `clone`,
/// `check_contract`); unknown options. A type that cannot travel (neither
/// `Serialize + DeserializeOwned` nor a `Callback`) is reported at the type, as
/// not implementing `nmsg::typed::WireArg`.
#[proc_macro_attribute]
pub fn events(args: TokenStream, input: TokenStream) -> TokenStream {
    let item = match syn::parse::<syn::Item>(input) {
        Ok(syn::Item::Trait(item)) => item,
        Ok(other) => {
            return syn::Error::new_spanned(
                ItemKeyword(&other),
                "`#[nmsg::events]` goes on a trait, whose methods are the events",
            )
            .to_compile_error()
            .into()
        }
        Err(e) => return e.to_compile_error().into(),
    };
    let mut errors = parse::Errors::default();
    let service = parse::service(args.into(), item.clone(), &mut errors);
    check::service(&service, &mut errors);
    match errors.finish() {
        Ok(()) => expand::expand(&service).into(),
        Err(e) => {
            // Keep the trait, so that code using it reports no errors of its own.
            // `allow(unused_parens)`: for `Callback<(T)>`, the compiler would
            // suggest `Callback<T>` beside our error, which asks for `(T,)`.
            let mut out = e.to_compile_error();
            out.extend(quote::quote!(#[allow(unused_parens)]));
            out.extend(parse::strip(item).into_token_stream());
            out.into()
        }
    }
}

/// The tokens of an item up to its name, to point an error at.
struct ItemKeyword<'a>(&'a syn::Item);

impl ToTokens for ItemKeyword<'_> {
    fn to_tokens(&self, tokens: &mut proc_macro2::TokenStream) {
        use syn::Item;
        match self.0 {
            Item::Struct(i) => {
                i.struct_token.to_tokens(tokens);
                i.ident.to_tokens(tokens);
            }
            Item::Enum(i) => {
                i.enum_token.to_tokens(tokens);
                i.ident.to_tokens(tokens);
            }
            Item::Fn(i) => i.sig.to_tokens(tokens),
            Item::Impl(i) => {
                i.impl_token.to_tokens(tokens);
                i.self_ty.to_tokens(tokens);
            }
            other => other.to_tokens(tokens),
        }
    }
}
