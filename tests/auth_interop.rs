//! Authentication between processes over real TCP (127.0.0.1): the
//! conformance peers (`examples/conformance.rs` and the JavaScript peer of
//! `tests/js`) with `--token`, in every pairing of client and server, plain
//! and with sessions: the right token passes the scenarios, a wrong one makes
//! `connect` exit 3 with a line that says the server rejected the
//! authentication, and a client without a token (the JavaScript peer as the
//! original is, or the Rust one) is refused by a server that requires one.
//!
//! Needs Node.js 20 or later on PATH, as `tests/interop.rs`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::Duration;

mod js_support;
use js_support::{js_dir, js_ready};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    Rust,
    Js,
}

/// The conformance example, built beside the test binaries (as in
/// `tests/interop.rs`: `cargo test --test NAME` alone does not build
/// examples, and an old binary would test old code).
fn rust_peer() -> PathBuf {
    static BUILD: Once = Once::new();
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "conformance"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --example conformance failed");
    });
    profile_dir
        .join("examples")
        .join(format!("conformance{}", std::env::consts::EXE_SUFFIX))
}

fn command(peer: Peer, mode: &str, addr: &str, session: bool, token: Option<&str>) -> Command {
    let mut cmd = match peer {
        Peer::Rust => Command::new(rust_peer()),
        Peer::Js => {
            js_ready();
            let mut cmd = Command::new("node");
            cmd.arg(js_dir().join("conformance.js"));
            cmd
        }
    };
    cmd.args([mode, "--addr", addr]);
    if mode == "serve" {
        cmd.arg("--until-eof");
    }
    if session {
        cmd.arg("--session");
    }
    if let Some(token) = token {
        cmd.args(["--token", token]);
    }
    cmd
}

/// A conformance server, killed when dropped.
struct Served {
    child: Child,
    addr: String,
}

impl Served {
    fn start(peer: Peer, session: bool, token: &str) -> Served {
        let mut child = command(peer, "serve", "127.0.0.1:0", session, Some(token))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the LISTENING line");
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("expected LISTENING, got {line:?}"))
            .to_owned();
        Served { child, addr }
    }

    /// Ends the server (stdin closed): its stderr, the log of what it refused.
    fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let mut stderr = String::new();
        let mut pipe = self.child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let _ = pipe.read_to_string(&mut stderr);
            stderr
        });
        let _ = self.child.wait();
        reader.join().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a conformance client to its end (each of its scenarios is bounded).
fn connect(peer: Peer, addr: &str, session: bool, token: Option<&str>) -> (Output, String) {
    let output = command(peer, "connect", addr, session, token)
        .stdin(Stdio::null())
        .output()
        .expect("run the client");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!(
        "---- {peer:?} client ----\n{stdout}---- its stderr ----\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (output, stdout)
}

/// With the server's token the client passes every scenario; with another
/// it exits 3, printing that the server rejected the authentication and
/// running nothing; the server says why.
fn token_pairing(server: Peer, client: Peer, session: bool) {
    let served = Served::start(server, session, "open-sesame");
    let (good, stdout) = connect(client, &served.addr, session, Some("open-sesame"));
    assert!(
        good.status.success() && stdout.contains(" 0 failed"),
        "{client:?} client with the right token against a {server:?} server:\n{stdout}"
    );
    let (bad, stdout) = connect(client, &served.addr, session, Some("guess"));
    assert_eq!(bad.status.code(), Some(3), "{stdout}");
    assert_eq!(
        stdout.trim(),
        "AUTH REJECTED the server rejected the authentication: wrong token"
    );
    let log = served.finish();
    assert!(
        log.contains("wrong token"),
        "the server's log says why:\n{log}"
    );
}

#[test]
fn rust_client_and_rust_server_with_a_token() {
    token_pairing(Peer::Rust, Peer::Rust, false);
}

#[test]
fn rust_client_and_rust_server_with_a_token_and_sessions() {
    token_pairing(Peer::Rust, Peer::Rust, true);
}

#[test]
fn js_client_and_rust_server_with_a_token() {
    token_pairing(Peer::Rust, Peer::Js, false);
}

#[test]
fn js_client_and_rust_server_with_a_token_and_sessions() {
    token_pairing(Peer::Rust, Peer::Js, true);
}

#[test]
fn rust_client_and_js_server_with_a_token() {
    token_pairing(Peer::Js, Peer::Rust, false);
}

#[test]
fn rust_client_and_js_server_with_a_token_and_sessions() {
    token_pairing(Peer::Js, Peer::Rust, true);
}

/// A client that does not authenticate against a Rust server that requires
/// a token: the JavaScript peer as the original is (a plain first message).
/// It is refused (every scenario fails, fast: the connection closes), and
/// the server says why. (A Rust client without credentials: tests/auth.rs.)
#[test]
fn the_javascript_original_is_refused_by_a_rust_server_that_requires_a_token() {
    let served = Served::start(Peer::Rust, false, "open-sesame");
    let started = std::time::Instant::now();
    let (out, stdout) = connect(Peer::Js, &served.addr, false, None);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("0 passed"), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "refused, not hung: {:?}",
        started.elapsed()
    );
    let log = served.finish();
    assert!(
        log.contains("first message was not a hello with credentials"),
        "the server's log says why:\n{log}"
    );
}
