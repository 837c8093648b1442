//! TypeScript declarations of `#[nmsg::events]` traits, checked by the
//! TypeScript compiler: the declarations of the example and conformance
//! traits (and of a trait naming serde types of every kind) are written to a
//! temporary folder, a TypeScript client and server written against them must
//! compile under `tsc --strict --noEmit`, and code that misuses them (a wrong
//! argument type, a missing callback, a callback of the wrong arity, ..) must
//! not. The compiler is pinned in tests/ts (`npm ci` there when missing).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use nmsg::typescript::{declarations, Declarations};
use nmsg::{Callback, Value};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use ts_rs::TS;

#[path = "../examples/typed.rs"]
#[allow(dead_code)]
mod typed_example;

#[path = "../examples/conformance.rs"]
#[allow(dead_code)]
mod conformance_example;

/// A struct, as serde writes it: a map of its fields, renamed.
#[derive(Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: u64,
    pub lines: Vec<Line>,
    pub note: Option<String>,
    pub tags: HashMap<String, u32>,
    pub at: (f64, f64),
}

#[derive(Serialize, Deserialize, TS)]
pub struct Line {
    pub item: String,
    pub count: i64,
}

/// An internally tagged enum.
#[derive(Serialize, Deserialize, TS)]
#[serde(tag = "kind")]
pub enum Payment {
    Card { last4: String },
    Cash,
}

/// A plain enum: its variants' names.
#[derive(Serialize, Deserialize, TS)]
pub enum Speed {
    Slow,
    Fast,
}

/// The shop: serde types of each kind, binary, and nested callbacks.
#[nmsg::events(rename_all = "kebab-case")]
pub trait Shop {
    /// Places an order.
    async fn place(&self, order: Order, pay: Payment) -> Result<u64, String>;
    async fn cancel(&self, order_id: u64) -> Result<(), String>;
    fn speed(&self, speed: Speed, limits: BTreeMap<String, Option<f64>>);
    async fn receipt(&self, order_id: u64) -> ByteBuf;
    fn raw(&self, bytes: Vec<u8>, values: Vec<Value>);
    /// A callback that gets a callback that gets a callback.
    #[allow(clippy::type_complexity)] // written out: the macro reads the `Value` in it
    fn deep(&self, cb: Callback<(Callback<(Callback<(Order, Option<Value>)>,)>,)>);
}

/// Where the TypeScript compiler is installed: tests/ts.
fn ts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("ts")
}

/// Installs the pinned compiler once (`npm ci` in tests/ts) when it is missing.
fn tsc_ready() -> PathBuf {
    static INSTALL: Once = Once::new();
    let tsc = ts_dir()
        .join("node_modules")
        .join("typescript")
        .join("bin")
        .join("tsc");
    INSTALL.call_once(|| {
        if !tsc.exists() || !ts_dir().join("node_modules/@types/node").exists() {
            eprintln!(
                "installing the TypeScript compiler: npm ci in {}",
                ts_dir().display()
            );
            let status = Command::new("npm")
                .args(["ci", "--prefer-offline", "--no-audit", "--no-fund"])
                .current_dir(ts_dir())
                .status()
                .expect("npm is not installed: the TypeScript checks install tests/ts with it");
            assert!(status.success(), "npm ci failed in tests/ts");
        }
    });
    assert!(tsc.exists(), "{} is missing after npm ci", tsc.display());
    tsc
}

/// A folder with the declarations of every trait, and the TypeScript files given.
struct Project {
    dir: PathBuf,
}

impl Project {
    fn new(name: &str) -> Project {
        let dir = std::env::temp_dir().join(format!("nmsg-ts-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Declarations::new()
            .add::<typed_example::GreeterClient>()
            .add::<typed_example::GuestClient>()
            .write(dir.join("greeter.d.ts"))
            .unwrap();
        std::fs::write(
            dir.join("conformance.d.ts"),
            declarations::<conformance_example::ConformanceClient>(),
        )
        .unwrap();
        std::fs::write(dir.join("shop.d.ts"), declarations::<ShopClient>()).unwrap();
        Project { dir }
    }

    /// Compiles `files` (with the declarations) in one run of
    /// `tsc --strict --noEmit`: its success, and what the compiler said.
    fn tsc(&self, files: &[(String, String)]) -> (bool, String) {
        for (file, source) in files {
            std::fs::write(self.dir.join(file), source).unwrap();
        }
        let out = Command::new("node")
            .arg(tsc_ready())
            .args([
                "--strict",
                "--noEmit",
                "--target",
                "es2020",
                "--module",
                "commonjs",
                "--moduleResolution",
                "node",
                "--typeRoots",
            ])
            .arg(ts_dir().join("node_modules").join("@types"))
            .arg("--types")
            .arg("node")
            .args(files.iter().map(|(file, _)| file))
            .current_dir(&self.dir)
            .output()
            .expect("node is not installed: the TypeScript checks need Node.js on PATH");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    fn declarations(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Node client of the Rust `Greeter` server (examples/typed.rs), which
/// serves `Guest` for the server's calls back; the values' types are stated,
/// so a wrong declaration does not compile.
const GREETER_CLIENT: &str = r#"
import type { GreeterEmitter, GuestHandlers } from "./greeter";
declare const router: GreeterEmitter & GuestHandlers;

router.emit("hello", "Ann");
router.emit("ping", (value) => { const s: string = value; });
router.emit("div", 6, 3, (err, quotient) => {
  if (err !== null) { const e: string = err; } else if (quotient !== undefined) { const q: number = quotient; }
});
router.emit("pick-hand", (left, right) => {
  left((colour) => { const c: string = colour; });
  right((colour) => { const c: string = colour; });
});
router.emit("join", "Ann", (err, said) => { const s: string | undefined = said; });
router.on("welcome", (text, cb) => { cb(`glad to be here, ${text.length}`); });
"#;

/// A Node server of `Greeter`, for a Rust client, calling it back as a `Guest`.
const GREETER_SERVER: &str = r#"
import type { GreeterHandlers, GuestEmitter } from "./greeter";
declare const socket: GreeterHandlers & GuestEmitter;

socket.on("hello", (name) => { console.log(name.toUpperCase()); });
socket.on("ping", (cb) => cb("pong"));
socket.on("div", (a, b, cb) => (b === 0 ? cb("division by zero") : cb(null, a / b)));
socket.on("pick-hand", (hands) => hands((c) => c("white"), (c) => c("black")));
socket.on("join", (name, cb) => {
  socket.emit("welcome", `welcome, ${name}`, (answer) => cb(null, `${name} said ${answer}`));
});
"#;

/// Both ends of the conformance events that the trait states.
const CONFORMANCE: &str = r#"
import type { ConformanceEmitter, ConformanceHandlers } from "./conformance";
declare const client: ConformanceEmitter;
declare const server: ConformanceHandlers;

client.emit("echo", { any: ["thing", 1] }, (value) => { const v: unknown = value; });
client.emit("ping", 42, (message) => { const m: string = message; }, (pong, inner) => {
  const p: string = pong;
  inner((last) => { const l: string = last; });
});
client.emit("multi", (v) => {}, "value", (v) => {});
client.emit("notify", "event", null, (ok) => { const b: boolean = ok; });

server.on("echo", (value, cb) => cb(value));
server.on("ping", (data, err, done) => {
  err("This is error message");
  done("pong", (cb2) => cb2("You can have as many levels as you want..."));
});
server.on("pick-hand", (cb) => cb((c) => c("white"), (c) => c("black")));
server.on("multi", (cb0, value, cb2) => { cb2(value); cb0(value); });
server.on("notify", (event, payload, cb) => cb(true));
"#;

/// The shop's serde types, both ways.
const SHOP: &str = r#"
import type { ShopEmitter, ShopHandlers, Order, Payment, Speed } from "./shop";
declare const client: ShopEmitter;
declare const server: ShopHandlers;

const order: Order = {
  orderId: Date.now(),
  lines: [{ item: "pen", count: -5e9 }],
  note: null,
  tags: { red: 1 },
  at: [1.5, 2.5],
};
const card: Payment = { kind: "Card", last4: "4242" };
const cash: Payment = { kind: "Cash" };
const fast: Speed = "Fast";
client.emit("place", order, card, (err, id) => { const n: number | undefined = id; });
client.emit("cancel", 2 ** 40, (err) => { const e: string | null = err; });
client.emit("speed", fast, { a: 1.5, b: null });
client.emit("receipt", 1, (pdf) => { const b: Buffer = pdf; });
client.emit("raw", [1, 2, 3], [null, "x", { y: [1] }]);
client.emit("deep", (next) => next((o, v) => { const id: number = o.orderId; const x: unknown = v; }));

server.on("place", (o, pay, cb) => {
  const id: number = o.orderId;
  if (pay.kind === "Card") { cb(null, id + pay.last4.length); } else { cb("cash only at the till"); }
});
server.on("cancel", (id, cb) => cb(null));
server.on("receipt", (id, cb) => cb(Buffer.from("receipt")));
server.on("deep", (cb) => cb((last) => last(order, null)));
server.on("speed", (s, limits) => { const l: number | null | undefined = limits["a"]; });
"#;

#[test]
fn the_declarations_of_the_example_and_conformance_traits_type_check() {
    let project = Project::new("pass");
    let files: Vec<(String, String)> = [
        ("greeter-client.ts", GREETER_CLIENT),
        ("greeter-server.ts", GREETER_SERVER),
        ("conformance-ends.ts", CONFORMANCE),
        ("shop-ends.ts", SHOP),
    ]
    .iter()
    .map(|(f, s)| (f.to_string(), s.to_string()))
    .collect();
    let (ok, said) = project.tsc(&files);
    assert!(
        ok,
        "the TypeScript ends do not compile:\n{said}\n--- greeter.d.ts:\n{}\n--- conformance.d.ts:\n{}\n--- shop.d.ts:\n{}",
        project.declarations("greeter.d.ts"),
        project.declarations("conformance.d.ts"),
        project.declarations("shop.d.ts"),
    );
}

/// Misuses that must not compile, each with the error the compiler gives and
/// the line it gives it on.
#[test]
fn misuses_of_the_declarations_do_not_compile() {
    let project = Project::new("fail");
    let cases: &[(&str, &str, &str)] = &[
        (
            "a wrong argument type",
            r#"router.emit("div", "6", 3, (err, q) => {});"#,
            "error TS2345",
        ),
        (
            "a missing callback",
            r#"router.emit("ping");"#,
            "error TS2554",
        ),
        (
            "a missing reply callback after the arguments",
            r#"router.emit("div", 6, 3);"#,
            "error TS2554",
        ),
        (
            "a callback of the wrong arity",
            r#"router.emit("div", 6, 3, (err: string | null, q: number | undefined, extra: number) => {});"#,
            "error TS2345",
        ),
        (
            "a nested callback invoked with too few arguments",
            r#"socket.on("pick-hand", (hands) => hands((c) => c("white")));"#,
            "error TS2554",
        ),
        (
            "a nested callback's argument of the wrong type, three levels down",
            r#"socket.on("pick-hand", (hands) => hands((c) => c(1), (c) => c("black")));"#,
            "error TS2345",
        ),
        (
            "an error-first answer with a value of the wrong type",
            r#"socket.on("div", (a, b, cb) => cb(null, "two"));"#,
            "error TS2345",
        ),
        (
            "a bigint for a 64-bit integer (the Node side decodes a number)",
            r#"shop.emit("cancel", 5n, (err) => {});"#,
            "error TS2345",
        ),
        (
            "an event the trait does not have",
            r#"router.emit("pong", () => {});"#,
            "error TS2345",
        ),
    ];
    let header = r#"import type { GreeterEmitter, GreeterHandlers } from "./greeter";
import type { ShopEmitter } from "./shop";
declare const router: GreeterEmitter;
declare const socket: GreeterHandlers;
declare const shop: ShopEmitter;
"#;
    // One file a case, all compiled in one run (the compiler is slow to start).
    let files: Vec<(String, String)> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, line, _))| (format!("fail{i}.ts"), format!("{header}{line}\n")))
        .collect();
    let (ok, said) = project.tsc(&files);
    assert!(!ok, "the misuses compile");
    let errors: Vec<&str> = said.lines().filter(|l| l.contains(": error TS")).collect();
    for (i, (what, line, error)) in cases.iter().enumerate() {
        let file = format!("fail{i}.ts(");
        let mine: Vec<&&str> = errors.iter().filter(|l| l.starts_with(&file)).collect();
        // The error is on the misuse (line 6), not on the header.
        let at = format!("fail{i}.ts(6,");
        assert!(
            !mine.is_empty() && mine.iter().all(|l| l.starts_with(&at)),
            "{what} ({line}): expected errors at line 6 of fail{i}.ts only, the compiler said:\n{said}"
        );
        assert!(
            mine.iter().any(|l| l.contains(&format!("{error}:"))),
            "{what} ({line}): expected {error}, the compiler said:\n{said}"
        );
    }
    assert_eq!(
        errors.iter().filter(|l| !l.starts_with("fail")).count(),
        0,
        "errors outside the misuses:\n{said}"
    );
}

#[test]
fn the_declarations_read_as_documented() {
    let dts = declarations::<typed_example::GreeterClient>();
    for line in [
        r#"  "hello": (name: string) => void;"#,
        r#"  "ping": (cb: (value: string) => void) => void;"#,
        r#"  "div": (a: number, b: number, cb: (err: string | null, value?: number) => void) => void;"#,
        // The Peer parameter is not sent, so it is not listed.
        r#"  "join": (name: string, cb: (err: string | null, value?: string) => void) => void;"#,
        "  /** Error-first, as Node: `cb(null, quotient)` or `cb(error)`. */",
    ] {
        assert!(dts.contains(line), "{line:?} not in:\n{dts}");
    }
    let shop = declarations::<ShopClient>();
    for line in [
        "/// <reference types=\"node\" />",
        r#"export type Order = { orderId: number, lines: Array<Line>, note: string | null, tags: { [key in string]: number }, at: [number, number], };"#,
        r#"  "cancel": (order_id: number, cb: (err: string | null) => void) => void;"#,
        r#"  "receipt": (order_id: number, cb: (value: Buffer) => void) => void;"#,
        r#"  "raw": (bytes: Array<number>, values: Array<unknown>) => void;"#,
    ] {
        assert!(shop.contains(line), "{line:?} not in:\n{shop}");
    }
}

#[test]
fn a_method_under_cfg_is_left_out_and_its_types_need_no_description() {
    #[cfg(any())]
    mod absent {
        pub struct Missing;
    }
    #[nmsg::events]
    pub trait Gated {
        fn kept(&self, n: u32);
        #[cfg(any())]
        fn gone(&self, m: absent::Missing);
    }
    let dts = declarations::<GatedClient>();
    assert!(dts.contains(r#""kept": (n: number) => void;"#), "{dts}");
    assert!(!dts.contains("gone"), "{dts}");
}
