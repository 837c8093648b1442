//! Interoperability: the conformance scenarios of CONFORMANCE.md between the
//! Rust peer (`examples/conformance.rs`) and the JavaScript peer (`tests/js`),
//! in both directions, with both codecs, buffered and unbuffered: 12 runs.
//!
//! Needs Node.js. The JavaScript dependencies are installed (`npm ci`) when
//! missing. Without `node`, the tests fail with the reason (set
//! `NMSG_SKIP_JS=1` to skip the runs that need it, outside CI).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The conformance example, built by `cargo test` beside the test binaries.
fn rust_peer() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir
        .join("examples")
        .join(format!("conformance{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        // `cargo test --test interop` alone does not build examples.
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "conformance"])
            .current_dir(root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --example conformance failed");
    }
    path
}

fn js_dir() -> PathBuf {
    root().join("tests").join("js")
}

/// Checks for node and installs the JavaScript dependencies once. `false`
/// means: skip (only when NMSG_SKIP_JS is set and CI is not).
fn js_ready() -> bool {
    static INSTALL: Once = Once::new();
    let node = Command::new("node").arg("--version").output();
    if node.as_ref().map_or(true, |o| !o.status.success()) {
        if std::env::var_os("NMSG_SKIP_JS").is_some() && std::env::var_os("CI").is_none() {
            eprintln!("skipping: node is not installed (NMSG_SKIP_JS is set)");
            return false;
        }
        panic!("node is not installed: the JavaScript interop tests need Node.js 20+ on PATH (set NMSG_SKIP_JS=1 to skip them outside CI)");
    }
    INSTALL.call_once(|| {
        if !js_dir()
            .join("node_modules")
            .join("@msgpack")
            .join("msgpack")
            .exists()
        {
            eprintln!(
                "installing the JavaScript peer's dependencies: npm ci in {}",
                js_dir().display()
            );
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(js_dir())
                .status()
                .expect("npm is not installed");
            assert!(status.success(), "npm ci failed in tests/js");
        }
    });
    true
}

#[derive(Clone, Copy, Debug)]
enum Peer {
    Rust,
    Js,
}

fn command(peer: Peer, mode: &str, addr: &str, codec: &str, buffered: bool) -> Command {
    let mut cmd = match peer {
        Peer::Rust => Command::new(rust_peer()),
        Peer::Js => {
            let mut c = Command::new("node");
            c.arg(js_dir().join("conformance.js"));
            c
        }
    };
    cmd.args([mode, "--addr", addr, "--codec", codec]);
    if buffered {
        cmd.arg("--buffered");
    }
    cmd
}

/// A running conformance server, killed on drop.
struct ServerProcess {
    child: Child,
    addr: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(peer: Peer, codec: &str, buffered: bool) -> ServerProcess {
    let mut child = command(peer, "serve", "127.0.0.1:0", codec, buffered)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {peer:?} server: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let addr = first
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| {
            panic!("the {peer:?} server printed {first:?} instead of LISTENING HOST:PORT")
        })
        .trim()
        .to_owned();
    ServerProcess { child, addr }
}

fn run_client(peer: Peer, addr: &str, codec: &str, buffered: bool) -> Output {
    let mut child = command(peer, "connect", addr, codec, buffered)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {peer:?} client: {e}"));
    // The client ends by itself (every scenario has a 10 s timeout); this bound
    // only keeps a hung process from hanging the test suite.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        if child.try_wait().expect("wait for client").is_some() {
            return child.wait_with_output().expect("client output");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("client output");
            panic!(
                "the {peer:?} client did not finish: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs one interop combination and checks that every scenario passed.
fn interop(server: Peer, client: Peer, codec: &str, buffered: bool) {
    if (matches!(server, Peer::Js) || matches!(client, Peer::Js)) && !js_ready() {
        return;
    }
    let srv = start_server(server, codec, buffered);
    let out = run_client(client, &srv.addr, codec, buffered);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    let label = format!("{client:?} client -> {server:?} server, {codec}, buffered={buffered}");
    // Written to the stderr handle itself, not with eprintln!, so that the
    // count of scenarios shows in the test output even when the test passes.
    let _ = writeln!(std::io::stderr(), "interop: {label}: {last}");
    let (passed, failed) = parse_summary(last)
        .unwrap_or_else(|| panic!("{label}: no summary line\n{stdout}\n{stderr}"));
    let expected = if codec == "json" { 15 } else { 16 };
    assert!(
        out.status.success() && failed == 0 && passed == expected,
        "{label}: {passed} passed, {failed} failed (expected {expected} passed)\n{stdout}\n{stderr}"
    );
}

fn parse_summary(line: &str) -> Option<(usize, usize)> {
    let (p, rest) = line.split_once(" passed, ")?;
    let f = rest.strip_suffix(" failed")?;
    Some((p.parse().ok()?, f.parse().ok()?))
}

macro_rules! interop_tests {
    ($($name:ident: $server:ident <- $client:ident, $codec:literal, $buffered:literal;)*) => {
        $(
            #[test]
            fn $name() {
                interop(Peer::$server, Peer::$client, $codec, $buffered);
            }
        )*
    };
}

interop_tests! {
    rust_client_to_rust_server_msgpack: Rust <- Rust, "msgpack", false;
    rust_client_to_rust_server_msgpack_buffered: Rust <- Rust, "msgpack", true;
    rust_client_to_rust_server_json: Rust <- Rust, "json", false;
    rust_client_to_rust_server_json_buffered: Rust <- Rust, "json", true;
    rust_client_to_js_server_msgpack: Js <- Rust, "msgpack", false;
    rust_client_to_js_server_msgpack_buffered: Js <- Rust, "msgpack", true;
    rust_client_to_js_server_json: Js <- Rust, "json", false;
    rust_client_to_js_server_json_buffered: Js <- Rust, "json", true;
    js_client_to_rust_server_msgpack: Rust <- Js, "msgpack", false;
    js_client_to_rust_server_msgpack_buffered: Rust <- Js, "msgpack", true;
    js_client_to_rust_server_json: Rust <- Js, "json", false;
    js_client_to_rust_server_json_buffered: Rust <- Js, "json", true;
}

/// The Rust conformance server answers the next valid frame on a connection
/// that sent malformed messages, closes a connection whose framing broke, and
/// goes on serving the others.
#[test]
fn rust_server_survives_malformed_messages_and_broken_framing() {
    use std::io::{Read, Write};
    let srv = start_server(Peer::Rust, "msgpack", false);
    let mut conn = std::net::TcpStream::connect(&srv.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let send = |conn: &mut std::net::TcpStream, payload: &[u8]| {
        conn.write_all(&(payload.len() as u32).to_be_bytes())
            .unwrap();
        conn.write_all(payload).unwrap();
    };
    // malformed: a string, a frame without `i`, a callback position past the end, undecodable bytes
    send(&mut conn, &[0xa3, b'b', b'a', b'd']);
    send(&mut conn, &[0x81, 0xa1, b'e', 0xa1, b'x']);
    send(
        &mut conn,
        &[
            0x83, 0xa1, b'i', 1, 0xa1, b'e', 0xa1, b'x', 0xa1, b'c', 0x91, 5,
        ],
    );
    send(&mut conn, &[0xc1, 0xc1]);
    // then a valid echo("hi", cb) on the same connection
    send(
        &mut conn,
        &[
            0x84, 0xa1, b'i', 2, 0xa1, b'e', 0xa4, b'e', b'c', b'h', b'o', 0xa1, b'a', 0x91, 0xa2,
            b'h', b'i', 0xa1, b'c', 0x91, 1,
        ],
    );
    let mut len = [0u8; 4];
    conn.read_exact(&mut len)
        .expect("no answer after malformed messages");
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    conn.read_exact(&mut payload).unwrap();
    let frames = nmsg::Codec::decode_message(&nmsg::MsgPack, &payload)
        .unwrap()
        .into_frames();
    let frame = frames[0].as_ref().unwrap();
    assert_eq!(
        frame.kind,
        nmsg::frame::FrameKind::Response { to: 2, position: 1 }
    );

    // broken framing on another connection: closed
    let mut broken = std::net::TcpStream::connect(&srv.addr).unwrap();
    broken
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    broken.write_all(&[0x7f, 0xff, 0xff, 0xff, 0]).unwrap();
    let mut buf = [0u8; 8];
    assert!(
        matches!(broken.read(&mut buf), Ok(0) | Err(_)),
        "the broken connection stays open"
    );

    // the first connection and new clients are still served
    send(
        &mut conn,
        &[
            0x84, 0xa1, b'i', 3, 0xa1, b'e', 0xa4, b'e', b'c', b'h', b'o', 0xa1, b'a', 0x91, 0xa2,
            b'h', b'i', 0xa1, b'c', 0x91, 1,
        ],
    );
    conn.read_exact(&mut len)
        .expect("no answer after another connection broke");
    let out = run_client(Peer::Rust, &srv.addr, "msgpack", false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The README's "Talking to Node.js" example, as written there: a JavaScript
/// server whose `greet` handler answers with a callback of its own, and a Rust
/// client that calls it and then calls that callback.
#[test]
fn readme_node_example_works() {
    if !js_ready() {
        return;
    }
    let script = format!(
        r#"
const net = require('node:net');
const {{ Peer }} = require({module:?});
const server = net.createServer((socket) => {{
  const peer = new Peer(socket, {{ codec: 'msgpack' }});
  peer.on('greet', (name, reply) => {{
    reply(`hello, ${{name}}`, (thanks) => {{ console.log('Rust says:', thanks); process.exit(0); }});
  }});
}}).listen(0, '127.0.0.1', () => console.log('LISTENING 127.0.0.1:' + server.address().port));
"#,
        module = js_dir().join("nmsg.js").display().to_string()
    );
    let mut child = Command::new("node")
        .args(["-e", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start node");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("LISTENING ")
        .expect("node printed its address")
        .to_owned();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let greeting = runtime.block_on(async move {
        use nmsg::{args, Client, RemoteCallback};
        let client = Client::tcp(addr).start();
        let (greeting, answer): (String, RemoteCallback) = client
            .router()
            .request("greet", args!["Ann"])
            .await
            .unwrap();
        answer.call(("thank you",)).unwrap();
        client.stop().await;
        greeting
    });
    assert_eq!(greeting, "hello, Ann");
    let said = lines.next().unwrap().unwrap();
    assert_eq!(said, "Rust says: thank you");
    assert!(child.wait().unwrap().success());
}
