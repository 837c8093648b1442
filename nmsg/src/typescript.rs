//! TypeScript declarations of `#[nmsg::events]` traits, for a Node.js peer
//! (the `typescript` feature).
//!
//! [`declarations::<GreeterClient>()`](declarations) gives a `.d.ts` module
//! for the trait `Greeter` (any generated `<Trait>Client` names its trait);
//! [`Declarations`] puts several traits in one module.
//!
//! ```
//! use nmsg::Callback;
//! use serde::{Deserialize, Serialize};
//!
//! /// A point on the board.
//! #[derive(Serialize, Deserialize, ts_rs::TS)]
//! pub struct Point {
//!     x: i32,
//!     y: i32,
//! }
//!
//! #[nmsg::events]
//! pub trait Board {
//!     /// Moves the piece.
//!     async fn place(&self, at: Point, stamp: u64) -> Result<bool, String>;
//!     fn watch(&self, moved: Callback<(Point,)>);
//! }
//!
//! let dts = nmsg::typescript::declarations::<BoardClient>();
//! assert!(dts.contains("export type Point = { x: number, y: number, };"));
//! assert!(dts.contains(
//!     r#""place": (at: Point, stamp: number, cb: (err: string | null, value?: boolean) => void) => void;"#
//! ));
//! assert!(dts.contains(r#""watch": (moved: ((a0: Point) => void)) => void;"#));
//! ```
//!
//! # What the module holds
//!
//! For a trait `Greeter`, the interface `GreeterEvents` maps each event's wire
//! name to the function a Node peer calls `emit` with (after the name) and
//! registers with `on`:
//!
//! ```text
//! export interface GreeterEvents {
//!   /** Error-first, as Node: `cb(null, quotient)` or `cb(error)`. */
//!   "div": (a: number, b: number, cb: (err: string | null, value?: number) => void) => void;
//!   ...
//! }
//! export interface GreeterEmitter {
//!   emit<E extends keyof GreeterEvents>(event: E, ...args: Parameters<GreeterEvents[E]>): unknown;
//! }
//! export interface GreeterHandlers {
//!   on<E extends keyof GreeterEvents>(event: E, handler: GreeterEvents[E]): unknown;
//! }
//! ```
//!
//! A Node client of a Rust server that serves `Greeter` views its router
//! (nmsg's `client.router`, or any object with such an `emit`) as a
//! `GreeterEmitter`; a Node server of the trait registers its handlers
//! through a `GreeterHandlers` view.
//!
//! - Arguments are listed in order, named as in the trait; a `Peer`
//!   parameter is not sent, and is not listed. A method under `#[cfg(..)]`
//!   is left out.
//! - A reply is a trailing callback: `cb: (value: T) => void` for `-> T`;
//!   error-first for `-> Result<T, E>`, `cb(err)` or `cb(null, value)`, typed
//!   `(err: E | null, value?: T) => void` as Node's own callbacks are (so a
//!   handler may call it either way, and a caller's `(err, value) => ..`
//!   fits), `(err: E | null) => void` for `Result<(), E>`.
//! - `Callback<(A, B)>` is `(a0: A, a1: B) => void`, to any depth.
//! - Data is described as serde lays it out, by [ts-rs](ts_rs) for the types
//!   that derive `ts_rs::TS` (with serde's `rename`, `tag`, `untagged`,
//!   `flatten`, ..): structs, enums, options (`T | null`), maps, tuples.
//!   Integers of 64 bits and more are `number`, as the Node side decodes them
//!   (above 2^53 they lose precision there). `nmsg::Value` is `unknown`;
//!   `serde_bytes::ByteBuf` and `bytes::Bytes` are `Buffer` (the module then
//!   references Node's types). A plain `Vec<u8>` is what serde makes of it,
//!   an array of numbers (`Array<number>`): use `ByteBuf`, or
//!   `#[serde(with = "serde_bytes")]` with `#[ts(type = "Buffer")]` on a
//!   field, for binary.
//!
//! Types are named as written: a type that has no description (it neither
//! derives `ts_rs::TS` nor is one of the above) is a compile error at the call
//! of `declarations`, naming the type. `Callback`, `Option`, `Vec`,
//! `VecDeque`, `Box`, `Arc`, `HashMap`, `BTreeMap`, tuples and arrays are read
//! by the macro from the trait's tokens, and `Value`, `ByteBuf` and `Bytes` are
//! known by their names (a type of your own with one of these names is taken
//! for them: import it under another). A type alias is described through
//! `ts_rs::TS` like other names: an alias of a callback works, but a `Value`
//! or `ByteBuf` inside it has no description, so write such types out in the
//! trait.

use std::collections::BTreeMap;
use std::fmt::Write as _;

pub use ts_rs;
use ts_rs::{TypeVisitor, TS};

use crate::callback::Callback;
use crate::typed::__private::{Declare, Describe, EventDecl, ReplyDecl, TraitDecl, Ts};

/// The `.d.ts` module for the trait of `C`, a generated `<Trait>Client`.
pub fn declarations<C: Declare<Declarations>>() -> String {
    let mut d = Declarations::new();
    d.add::<C>();
    d.to_string()
}

/// A `.d.ts` module of one or more traits, with the data types they name
/// declared once. Its `Display` is the module's text.
///
/// ```
/// #[nmsg::events]
/// pub trait Ping {
///     async fn ping(&self) -> String;
/// }
/// #[nmsg::events]
/// pub trait Pong {
///     fn pong(&self, n: u64);
/// }
/// let dts = nmsg::typescript::Declarations::new()
///     .add::<PingClient>()
///     .add::<PongClient>()
///     .to_string();
/// assert!(dts.contains(r#""pong": (n: number) => void;"#));
/// ```
pub struct Declarations {
    cfg: ts_rs::Config,
    /// Declarations of named data types, by name.
    types: BTreeMap<String, String>,
    traits: Vec<String>,
    buffer: bool,
}

impl std::fmt::Debug for Declarations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Declarations")
            .field("types", &self.types.keys())
            .field("traits", &self.traits.len())
            .finish()
    }
}

impl Default for Declarations {
    fn default() -> Self {
        Declarations::new()
    }
}

impl Declarations {
    /// An empty module.
    pub fn new() -> Self {
        Declarations {
            // What a Node peer's MsgPack library gives for 64-bit integers.
            cfg: ts_rs::Config::new().with_large_int("number"),
            types: BTreeMap::new(),
            traits: Vec::new(),
            buffer: false,
        }
    }

    /// Adds the trait of `C`, a generated `<Trait>Client`.
    pub fn add<C: Declare<Declarations>>(&mut self) -> &mut Self {
        let decl = C::declare(self);
        let text = self.render_trait(&decl);
        self.traits.push(text);
        self
    }

    /// Writes the module to `path`.
    pub fn write(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_string())
    }

    fn render_trait(&mut self, decl: &TraitDecl) -> String {
        let name = decl.name;
        let mut out = String::new();
        let intro = if decl.docs.is_empty() {
            format!("The events of the Rust trait `{name}`.")
        } else {
            decl.docs.to_owned()
        };
        out.push_str(&jsdoc(&intro, ""));
        let _ = writeln!(out, "export interface {name}Events {{");
        for event in &decl.events {
            if !event.docs.is_empty() {
                out.push_str(&jsdoc(event.docs, "  "));
            }
            let _ = writeln!(out, "  {}: {};", quote(event.event), self.event(event));
        }
        out.push_str("}\n");
        let _ = write!(
            out,
            "/** A router that emits the events of `{name}` (a client of a server that serves it). */\n\
             export interface {name}Emitter {{\n  \
             emit<E extends keyof {name}Events>(event: E, ...args: Parameters<{name}Events[E]>): unknown;\n}}\n\
             /** A router that handles the events of `{name}` (a server of it). */\n\
             export interface {name}Handlers {{\n  \
             on<E extends keyof {name}Events>(event: E, handler: {name}Events[E]): unknown;\n}}\n"
        );
        out
    }

    fn event(&mut self, event: &EventDecl) -> String {
        let mut params: Vec<String> = event
            .params
            .iter()
            .map(|(name, ty)| format!("{}: {}", ident(name), self.render(ty)))
            .collect();
        match &event.reply {
            ReplyDecl::None => {}
            ReplyDecl::Value(ty) => {
                params.push(format!("cb: (value: {}) => void", self.render(ty)))
            }
            ReplyDecl::ErrorFirst { ok: None, err } => {
                params.push(format!("cb: (err: {} | null) => void", self.render(err)))
            }
            ReplyDecl::ErrorFirst { ok: Some(ok), err } => params.push(format!(
                "cb: (err: {} | null, value?: {}) => void",
                self.render(err),
                self.render(ok)
            )),
        }
        format!("({}) => void", params.join(", "))
    }

    fn render(&mut self, ty: &Ts) -> String {
        match ty {
            Ts::Described(text) => text.clone(),
            Ts::Known(text) => {
                if *text == "Buffer" {
                    self.buffer = true;
                }
                (*text).to_owned()
            }
            Ts::Callback(args) => {
                let args: Vec<String> = args
                    .iter()
                    .enumerate()
                    .map(|(i, a)| format!("a{i}: {}", self.render(a)))
                    .collect();
                format!("(({}) => void)", args.join(", "))
            }
            Ts::Option(inner) => format!("{} | null", self.render(inner)),
            Ts::Array(inner) => format!("Array<{}>", self.render(inner)),
            Ts::Tuple(elems) => {
                let elems: Vec<String> = elems.iter().map(|e| self.render(e)).collect();
                format!("[{}]", elems.join(", "))
            }
            Ts::Map(k, v) => format!("Record<{}, {}>", self.render(k), self.render(v)),
        }
    }

    /// Declares `T` (when it is a named type) and the named types it uses.
    fn named<T: TS + ?Sized + 'static>(&mut self) {
        struct Visit<'a>(&'a mut Declarations);
        impl TypeVisitor for Visit<'_> {
            fn visit<D: TS + 'static + ?Sized>(&mut self) {
                self.0.declare::<D>();
            }
        }
        self.declare::<T>();
        T::visit_dependencies(&mut Visit(self));
        T::visit_generics(&mut Visit(self));
    }

    fn declare<D: TS + ?Sized + 'static>(&mut self) {
        struct Visit<'a>(&'a mut Declarations);
        impl TypeVisitor for Visit<'_> {
            fn visit<D: TS + 'static + ?Sized>(&mut self) {
                self.0.declare::<D>();
            }
        }
        if D::output_path().is_none() {
            return;
        }
        let ident = D::ident(&self.cfg);
        if self.types.contains_key(&ident) {
            return;
        }
        let mut text = String::new();
        if let Some(docs) = D::docs() {
            text.push_str(&docs);
        }
        text.push_str("export ");
        text.push_str(&D::decl(&self.cfg));
        self.types.insert(ident, text);
        D::visit_dependencies(&mut Visit(self));
    }
}

impl std::fmt::Display for Declarations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("// Generated by nmsg from #[nmsg::events] traits. Do not edit.\n")?;
        if self.buffer {
            f.write_str("/// <reference types=\"node\" />\n")?;
        }
        for decl in self.types.values() {
            writeln!(f, "\n{}", decl.trim_end())?;
        }
        for decl in &self.traits {
            writeln!(f, "\n{}", decl.trim_end())?;
        }
        Ok(())
    }
}

/// A type with a TypeScript description for [`Declarations`]: every type that
/// derives (or implements) `ts_rs::TS`, and [`Callback`]s of such types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no TypeScript description",
    label = "a type of the trait, with no TypeScript description",
    note = "derive `ts_rs::TS` beside `Serialize` and `Deserialize` (ts-rs reads serde's attributes); a callback's arguments need one too"
)]
pub trait TypeScript {
    /// The type's TypeScript form, declaring in `d` the named types it uses.
    fn typescript(d: &mut Declarations) -> String;
}

#[diagnostic::do_not_recommend]
impl<T: TS + ?Sized + 'static> TypeScript for T {
    fn typescript(d: &mut Declarations) -> String {
        d.named::<T>();
        T::name(&d.cfg)
    }
}

impl<A: CallbackArgs> TypeScript for Callback<A> {
    fn typescript(d: &mut Declarations) -> String {
        let args: Vec<String> = A::args(d)
            .into_iter()
            .enumerate()
            .map(|(i, a)| format!("a{i}: {a}"))
            .collect();
        format!("(({}) => void)", args.join(", "))
    }
}

/// The arguments of a [`Callback`], a tuple of [`TypeScript`] types.
pub trait CallbackArgs {
    /// Each argument's TypeScript form.
    fn args(d: &mut Declarations) -> Vec<String>;
}

macro_rules! callback_args {
    ($($name:ident),*) => {
        impl<$($name: TypeScript),*> CallbackArgs for ($($name,)*) {
            #[allow(unused_variables)]
            fn args(d: &mut Declarations) -> Vec<String> {
                vec![$($name::typescript(d)),*]
            }
        }
    };
}

callback_args!();
callback_args!(A);
callback_args!(A, B);
callback_args!(A, B, C);
callback_args!(A, B, C, D);
callback_args!(A, B, C, D, E);
callback_args!(A, B, C, D, E, F);
callback_args!(A, B, C, D, E, F, G);
callback_args!(A, B, C, D, E, F, G, H);

impl<T: TypeScript + ?Sized> Describe<T> for Declarations {
    fn describe(&mut self) -> String {
        T::typescript(self)
    }
}

/// An event name as a property key.
fn quote(name: &str) -> String {
    serde_json::to_string(name).unwrap_or_else(|_| format!("{name:?}"))
}

/// A parameter name TypeScript accepts: Rust's are, except a few reserved words.
fn ident(name: &str) -> String {
    const RESERVED: &[&str] = &[
        "break",
        "case",
        "catch",
        "class",
        "const",
        "continue",
        "debugger",
        "default",
        "delete",
        "do",
        "else",
        "enum",
        "export",
        "extends",
        "false",
        "finally",
        "for",
        "function",
        "if",
        "import",
        "in",
        "instanceof",
        "new",
        "null",
        "return",
        "super",
        "switch",
        "this",
        "throw",
        "true",
        "try",
        "typeof",
        "var",
        "void",
        "while",
        "with",
        "yield",
        "let",
        "static",
        "implements",
        "interface",
        "package",
        "private",
        "protected",
        "public",
        "await",
    ];
    if RESERVED.contains(&name) {
        format!("{name}_")
    } else {
        name.to_owned()
    }
}

fn jsdoc(text: &str, indent: &str) -> String {
    let text = text.replace("*/", "*\\/");
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() == 1 {
        return format!("{indent}/** {} */\n", lines[0]);
    }
    let mut out = format!("{indent}/**\n");
    for line in lines {
        let _ = writeln!(out, "{}", format!("{indent} * {line}").trim_end());
    }
    out.push_str(&format!("{indent} */\n"));
    out
}
