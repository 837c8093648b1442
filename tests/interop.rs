//! Interoperability: the conformance scenarios between the Rust peer
//! (`examples/conformance.rs`) and the JavaScript peer (`tests/js`), in both
//! directions, with both codecs, buffered and unbuffered: 12 runs. Then the
//! JavaScript peer writing MsgPack as msgpack-lite 0.1.17 and 0.2.2 do (float64
//! for numbers beyond 32-bit integers, CESU-8 with 0.1.17), and speaking the
//! seed release's 2016 dialect (`e: ""` on responses, `{"b": [...]}` bulks,
//! always buffered; its server with the echo bug on) and the later nmsg-tcp
//! stack's (`e: ""` on responses), both directions: 10 runs, each group's at
//! once. A run passes
//! only if every scenario passed and neither peer's report line shows a
//! protocol error, a stray or duplicate response, a handler failure or an
//! unhandled event, and if bulk messages went both ways exactly when buffered.
//! Then: the Rust server against malformed input, `Buffering::Cycle` against the
//! JavaScript peer, the README's Node.js example as written there, and the
//! JavaScript peer's own checks (`check-vectors.js`, `self-test.js`).
//!
//! Needs Node.js 20 or later on PATH; without it these tests fail and say why.
//! The JavaScript dependencies are installed (`npm ci`) when missing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod js_support;
use js_support::{js_dir, js_ready};
mod tls_support;

/// How long a peer may take to start and print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client run may take (each scenario has a 10 s timeout of its own):
/// only a bound that keeps a hung process from hanging the test suite.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a server may take to print its report once told to finish (it
/// waits up to 10 s for connections to close).
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The conformance example, built beside the test binaries. `cargo test
/// --test interop` alone does not build examples, and an old binary would test
/// old code, so it is built (or found up to date) once per test run.
fn rust_peer() -> PathBuf {
    static BUILD: Once = Once::new();
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    BUILD.call_once(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--example", "conformance"])
            .current_dir(root());
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --example conformance failed");
    });
    profile_dir
        .join("examples")
        .join(format!("conformance{}", std::env::consts::EXE_SUFFIX))
}

// ---------------------------------------------------------------------------
// child processes
// ---------------------------------------------------------------------------

/// A child process, killed and waited for when dropped, so that no test leaves
/// one behind, failing or not. Its stdout is read line by line, with timeouts;
/// its stderr is collected and shown when the test fails.
struct Guarded {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Guarded {
    fn spawn(label: impl Into<String>, cmd: &mut Command) -> Guarded {
        let label = label.into();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Guarded {
            label,
            child,
            stdin,
            lines,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The next line of stdout; panics if none comes within `timeout`.
    fn line(&self, timeout: Duration, what: &str) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("{}: no {what} within {timeout:?}", self.label)
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("{}: stdout ended before {what}", self.label)
            }
        }
    }

    /// Every remaining line of stdout, up to its end; panics if it does not
    /// end within `timeout`.
    fn rest(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(RecvTimeoutError::Disconnected) => return lines,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: did not finish within {timeout:?}; its output so far:\n{}",
                    self.label,
                    lines.join("\n")
                ),
            }
        }
    }

    /// Closes the child's stdin.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the child to exit; panics if it does not within `timeout`.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: did not exit within {timeout:?}",
                self.label
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The pipe closes when the child is gone, unless children of its
            // own still hold it: wait for the reader only a little.
            if let Some(reader) = self.stderr_reader.take() {
                let deadline = Instant::now() + Duration::from_secs(2);
                while !reader.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            eprintln!(
                "---- stderr of {} ----\n{}---- end of stderr of {} ----",
                self.label,
                self.stderr_text(),
                self.label
            );
        }
    }
}

// ---------------------------------------------------------------------------
// conformance peers
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    Rust,
    Js,
}

/// The MsgPack library the JavaScript peer writes with (`--library`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Library {
    /// @msgpack/msgpack: int64/uint64 beyond 32-bit integers.
    MsgpackJs,
    /// msgpack-lite 0.1.17, the seed release's: float64 beyond 32-bit
    /// integers, CESU-8 beyond the Basic Multilingual Plane.
    Lite01,
    /// msgpack-lite 0.2.2: float64 beyond 32-bit integers.
    Lite02,
}

impl Library {
    fn flag(self) -> &'static str {
        match self {
            Library::MsgpackJs => "@msgpack/msgpack",
            Library::Lite01 => "msgpack-lite-0.1",
            Library::Lite02 => "msgpack-lite-0.2",
        }
    }
}

/// What the JavaScript peer writes (`--dialect`); it reads both.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dialect {
    /// nmsg-rpc from mid-April 2016 on.
    Later,
    /// The original's later complete TCP stack (nmsg-tcp): `e: ""` on every
    /// response, otherwise as `Later`.
    NmsgTcp,
    /// The seed's release, nmsg 1.0.2: `e: ""` on responses, `{"b": [...]}`
    /// bulks, always buffered; its TCP server writes every message back.
    Seed2016,
}

/// One run's settings. `buffered` is the Rust peer's, and the JavaScript
/// peer's in the later dialect (in 2016 it always buffers); `library` and
/// `dialect` are the JavaScript peer's.
#[derive(Clone, Copy, Debug)]
struct Setup {
    codec: &'static str,
    buffered: bool,
    library: Library,
    dialect: Dialect,
    /// The Rust peer's bulks are always `{"b": [...]}` (`--keyed-bulks`).
    keyed_bulks: bool,
    /// Over TLS: the server with `--tls-cert`/`--tls-key`, the client with
    /// `--tls-ca`/`--server-name` ([`pem_files`]).
    tls: bool,
    /// `--token` on both peers: the server requires it, the client sends it.
    token: Option<&'static str>,
}

impl Setup {
    /// Today's runs: the later dialect, @msgpack/msgpack.
    fn plain(codec: &'static str, buffered: bool) -> Setup {
        Setup {
            codec,
            buffered,
            library: Library::MsgpackJs,
            dialect: Dialect::Later,
            keyed_bulks: false,
            tls: false,
            token: None,
        }
    }

    /// Today's runs over TLS.
    fn tls(codec: &'static str, buffered: bool) -> Setup {
        Setup {
            tls: true,
            ..Setup::plain(codec, buffered)
        }
    }

    /// Whether the JavaScript peer sends bulks.
    fn js_buffers(&self) -> bool {
        self.buffered || self.dialect == Dialect::Seed2016
    }

    /// Whether a JavaScript server has the 2016 release's echo bug.
    fn echoing_server(&self, server: Peer) -> bool {
        server == Peer::Js && self.dialect == Dialect::Seed2016
    }

    fn describe(&self, server: Peer, client: Peer) -> String {
        let mut label = format!(
            "{client:?} client -> {server:?} server, {}, buffered={}",
            self.codec, self.buffered
        );
        if self.keyed_bulks {
            label.push_str(", keyed bulks");
        }
        if self.tls {
            label.push_str(", TLS");
        }
        if self.token.is_some() {
            label.push_str(", token");
        }
        if server == Peer::Js || client == Peer::Js {
            if self.codec == "msgpack" {
                label.push_str(&format!(", {}", self.library.flag()));
            }
            match self.dialect {
                Dialect::Later => {}
                Dialect::NmsgTcp => label.push_str(", dialect nmsg-tcp"),
                Dialect::Seed2016 => label.push_str(", dialect 2016"),
            }
            if self.echoing_server(server) {
                label.push_str(", echo bug");
            }
        }
        label
    }
}

fn command(peer: Peer, mode: &str, addr: &str, setup: &Setup, peer_echoes: bool) -> Command {
    let mut cmd = match peer {
        Peer::Rust => Command::new(rust_peer()),
        Peer::Js => {
            let mut c = Command::new("node");
            c.arg(js_dir().join("conformance.js"));
            c
        }
    };
    cmd.args([mode, "--addr", addr, "--codec", setup.codec]);
    if setup.buffered {
        cmd.arg("--buffered");
    }
    if mode == "serve" {
        cmd.arg("--until-eof");
    }
    if peer == Peer::Js {
        cmd.args(["--library", setup.library.flag()]);
        match setup.dialect {
            Dialect::Later => {}
            Dialect::NmsgTcp => {
                cmd.args(["--dialect", "nmsg-tcp"]);
            }
            Dialect::Seed2016 => {
                cmd.args(["--dialect", "2016"]);
                if mode == "serve" {
                    cmd.arg("--echo-bug");
                }
            }
        }
    }
    if peer_echoes {
        cmd.arg("--peer-echoes");
    }
    if peer == Peer::Rust && setup.keyed_bulks {
        cmd.arg("--keyed-bulks");
    }
    if setup.tls {
        let pem = pem_files();
        if mode == "serve" {
            cmd.arg("--tls-cert").arg(&pem.cert);
            cmd.arg("--tls-key").arg(&pem.key);
        } else {
            cmd.arg("--tls-ca").arg(&pem.ca);
            cmd.args(["--server-name", "localhost"]);
        }
    }
    if let Some(token) = setup.token {
        cmd.args(["--token", token]);
    }
    cmd
}

/// A CA, and a certificate it signed for `localhost` and its key, as PEM
/// files for the peers of the TLS runs: made once per test run.
fn pem_files() -> &'static tls_support::PemFiles {
    static FILES: std::sync::OnceLock<tls_support::PemFiles> = std::sync::OnceLock::new();
    FILES.get_or_init(|| tls_support::pem_files("interop-tls"))
}

/// A peer's report line, `REPORT key=value ...`, as a map.
type Report = BTreeMap<String, u64>;

fn parse_report(line: &str) -> Option<Report> {
    line.strip_prefix("REPORT ")?
        .split_whitespace()
        .map(|field| {
            let (key, value) = field.split_once('=')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of `key` in a report; panics if the report lacks it.
fn field(report: &Report, key: &str) -> u64 {
    *report
        .get(key)
        .unwrap_or_else(|| panic!("the report has no {key}: {report:?}"))
}

const ERROR_FIELDS: [&str; 5] = [
    "protocol_errors",
    "stray",
    "duplicates",
    "handler_failures",
    "unhandled",
];

/// What a peer must have received in a run.
#[derive(Clone, Copy, Debug, Default)]
struct Expect {
    /// Bulks: the other peer buffered (or echoed bulks back).
    bulks: bool,
    /// Only `{"b": [...]}` bulks, or none of them (a JavaScript peer's report
    /// says; the Rust peer's does not): `Some(true)` when the other peer wrote
    /// the 2016 dialect, or a Rust peer answered a peer that did.
    map_bulks: Option<bool>,
    /// Events with no handler: only a client of an echoing server gets any,
    /// its own events coming back.
    unhandled: u64,
}

impl Expect {
    fn bulks(bulks: bool) -> Expect {
        Expect {
            bulks,
            map_bulks: None,
            unhandled: 0,
        }
    }
}

/// Checks a report of a conformance run: nothing went wrong, and bulks were
/// received exactly when the other peer buffered (with several frames in at
/// least one of them).
fn check_report(label: &str, side: &str, report: &Report, expect: Expect) {
    for key in ERROR_FIELDS {
        let want = if key == "unhandled" {
            expect.unhandled
        } else {
            0
        };
        assert_eq!(
            field(report, key),
            want,
            "{label}: the {side} reported {key}: {report:?}"
        );
    }
    if let Some(maps) = expect.map_bulks {
        let want = if maps { field(report, "bulks") } else { 0 };
        assert_eq!(
            field(report, "map_bulks"),
            want,
            "{label}: the {side} received {} {{\"b\": ..}} bulks of {}, expected {want}: {report:?}",
            field(report, "map_bulks"),
            field(report, "bulks"),
        );
    }
    let buffered = expect.bulks;
    if let Some(&unclosed) = report.get("unclosed") {
        assert_eq!(unclosed, 0, "{label}: the {side} had connections left open");
    }
    let (bulks, frames) = (field(report, "bulks"), field(report, "bulk_frames"));
    if buffered {
        assert!(
            bulks > 0 && frames > bulks,
            "{label}: the {side} received {bulks} bulks with {frames} frames; \
             buffered sending must send bulks, some of several frames"
        );
    } else {
        assert_eq!(
            (bulks, frames),
            (0, 0),
            "{label}: the {side} received bulks from an unbuffered peer"
        );
    }
}

/// Starts a conformance server (which ends when its stdin closes); returns it
/// and the address it listens on.
fn start_server(peer: Peer, setup: &Setup) -> (Guarded, String) {
    if matches!(peer, Peer::Js) {
        js_ready();
    }
    let server = Guarded::spawn(
        format!("the {peer:?} server"),
        &mut command(peer, "serve", "127.0.0.1:0", setup, false),
    );
    let first = server.line(START_TIMEOUT, "LISTENING line");
    let addr = first
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| {
            panic!("the {peer:?} server printed {first:?} instead of LISTENING HOST:PORT")
        })
        .trim()
        .to_owned();
    (server, addr)
}

/// Tells a server to finish (closes its stdin) and returns its report, the
/// one line it prints then.
fn finish_server(server: &mut Guarded) -> Report {
    server.close_stdin();
    let lines = server.rest(FINISH_TIMEOUT);
    let status = server.wait(FINISH_TIMEOUT);
    assert!(status.success(), "{}: exited with {status}", server.label);
    match lines.as_slice() {
        [line] => parse_report(line)
            .unwrap_or_else(|| panic!("{}: {line:?} is not a report line", server.label)),
        _ => panic!(
            "{}: printed {lines:?} at the end instead of one report line",
            server.label
        ),
    }
}

/// The scenarios a conformance client runs, in order: the same for both peers.
/// Against an echoing server (`peer_echoes`), those in which the client
/// answers the server's callbacks are skipped.
fn scenarios(codec: &str, peer_echoes: bool) -> Vec<&'static str> {
    let mut names = vec![
        "echo-string",
        "echo-unicode",
        "echo-nested-map",
        "echo-big-int",
        "echo-float",
        "js-numbers",
        "non-bmp",
        "echo-binary",
        "echo-1mib",
        "add",
        "ping",
        "pick-hand",
        "countdown",
        "multi",
        "notify",
        "inflight-2000",
        "unknown-event",
        "stats",
    ];
    if codec == "json" {
        // JSON has no binary form: the scenario is skipped and not counted.
        names.retain(|n| *n != "echo-binary");
    }
    if peer_echoes {
        names.retain(|n| !["ping", "pick-hand", "countdown"].contains(n));
    }
    names
}

/// Runs a conformance client to its end and checks its whole output: a PASS
/// line for every scenario, in order, the summary, and the report line, which
/// it returns. The client is returned too, to show its stderr if the test fails.
fn run_client(peer: Peer, addr: &str, setup: &Setup, peer_echoes: bool) -> (Guarded, Report) {
    if matches!(peer, Peer::Js) {
        js_ready();
    }
    let mut client = Guarded::spawn(
        format!("the {peer:?} client"),
        &mut command(peer, "connect", addr, setup, peer_echoes),
    );
    client.close_stdin();
    let lines = client.rest(RUN_TIMEOUT);
    let status = client.wait(RUN_TIMEOUT);
    let output = lines.join("\n");
    let names = scenarios(setup.codec, peer_echoes);
    let mut expected: Vec<String> = names.iter().map(|n| format!("PASS {n}")).collect();
    expected.push(format!("{} passed, 0 failed", names.len()));
    let (report_line, scenario_lines) = lines
        .split_last()
        .unwrap_or_else(|| panic!("{}: printed nothing", client.label));
    assert_eq!(
        scenario_lines,
        expected.as_slice(),
        "{}: output differs from a full pass:\n{output}",
        client.label
    );
    let report = parse_report(report_line).unwrap_or_else(|| {
        panic!(
            "{}: the last line is not a report line:\n{output}",
            client.label
        )
    });
    assert!(
        status.success(),
        "{}: exited with {status}:\n{output}",
        client.label
    );
    (client, report)
}

/// Runs one interop combination and checks both peers' reports.
fn interop(server: Peer, client: Peer, setup: Setup) {
    let label = setup.describe(server, client);
    let echoes = setup.echoing_server(server);
    let (mut srv, addr) = start_server(server, &setup);
    let (_client, client_report) = run_client(client, &addr, &setup, echoes);
    let server_report = finish_server(&mut srv);
    let sends_bulks = |peer: Peer| match peer {
        Peer::Rust => setup.buffered,
        Peer::Js => setup.js_buffers(),
    };
    // A JavaScript peer of the 2016 dialect reads {"b": ..} bulks from the
    // other JavaScript peer, and from a Rust peer, which answers a peer in the
    // bulk form that peer sent. A Rust client speaks first: buffered, it
    // needs --keyed-bulks for that.
    let maps_for = |receiver: Peer| match receiver {
        Peer::Js => Some(setup.dialect == Dialect::Seed2016),
        Peer::Rust => None,
    };
    let mut client_expect = Expect {
        bulks: sends_bulks(server),
        map_bulks: maps_for(client),
        unhandled: 0,
    };
    if echoes {
        // The server's answers are {"b": ..} bulks; the client's own
        // messages come back as they were: every frame of them an event (the
        // client sends no responses), which it has no handler for, and
        // ignores. The server got `bulk_frames` of them in its bulks, one in
        // each other message.
        client_expect.bulks = true;
        client_expect.map_bulks = None;
        client_expect.unhandled = field(&server_report, "echoed") - field(&server_report, "bulks")
            + field(&server_report, "bulk_frames");
    }
    let server_expect = Expect {
        bulks: sends_bulks(client),
        map_bulks: maps_for(server),
        unhandled: 0,
    };
    check_report(&label, "client", &client_report, client_expect);
    check_report(&label, "server", &server_report, server_expect);
    if echoes {
        assert!(
            field(&server_report, "echoed") > 0,
            "{label}: the server echoed nothing: {server_report:?}"
        );
    }
    // Written to the stderr handle itself, not with eprintln!, so that what
    // went each way shows in the test output even when the test passes.
    let passed = scenarios(setup.codec, echoes).len();
    let _ = writeln!(
        std::io::stderr(),
        "interop: {label}: {passed} passed, 0 failed; bulks received: client {}/{} frames, server {}/{} frames",
        field(&client_report, "bulks"),
        field(&client_report, "bulk_frames"),
        field(&server_report, "bulks"),
        field(&server_report, "bulk_frames"),
    );
}

macro_rules! interop_tests {
    ($($name:ident: $server:ident <- $client:ident, $codec:literal, $buffered:literal;)*) => {
        $(
            #[test]
            fn $name() {
                interop(Peer::$server, Peer::$client, Setup::plain($codec, $buffered));
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

/// The conformance scenarios over TLS, each way between the Rust and the
/// JavaScript peer (Node's `tls` module) and between two Rust peers.
#[test]
fn conformance_scenarios_pass_over_tls() {
    interop_all(&[
        (Peer::Rust, Peer::Rust, Setup::tls("msgpack", false)),
        (Peer::Rust, Peer::Rust, Setup::tls("json", true)),
        (Peer::Js, Peer::Rust, Setup::tls("msgpack", false)),
        (Peer::Js, Peer::Rust, Setup::tls("msgpack", true)),
        (Peer::Rust, Peer::Js, Setup::tls("msgpack", false)),
        (Peer::Rust, Peer::Js, Setup::tls("json", true)),
    ]);
}

/// Over TLS with authentication: the server requires a token, the client
/// sends it, Rust and Node.js each way.
#[test]
fn conformance_scenarios_pass_over_tls_with_a_token() {
    let with_token = |codec, buffered| Setup {
        token: Some("s3cr3t"),
        ..Setup::tls(codec, buffered)
    };
    interop_all(&[
        (Peer::Rust, Peer::Rust, with_token("msgpack", false)),
        (Peer::Js, Peer::Rust, with_token("msgpack", true)),
        (Peer::Rust, Peer::Js, with_token("json", false)),
    ]);
}

/// Runs interop combinations at once, each on its own thread (the runs wait on
/// round trips far more than they compute), and fails with every failed run's
/// label and message.
fn interop_all(runs: &[(Peer, Peer, Setup)]) {
    let handles: Vec<_> = runs
        .iter()
        .map(|&(server, client, setup)| {
            let label = setup.describe(server, client);
            let handle = std::thread::Builder::new()
                .name(label.clone())
                .spawn(move || interop(server, client, setup))
                .expect("spawn a thread");
            (label, handle)
        })
        .collect();
    let failed: Vec<String> = handles
        .into_iter()
        .filter_map(|(label, handle)| {
            let panic = handle.join().err()?;
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Some(format!("{label}: {why}"))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} runs failed:\n{}",
        failed.len(),
        runs.len(),
        failed.join("\n")
    );
}

/// The JavaScript peer writing MsgPack as msgpack-lite does (JavaScript
/// numbers beyond 32-bit integers as float64, and with 0.1.17 CESU-8 for
/// characters beyond the Basic Multilingual Plane), each way. The codec
/// library only matters for MsgPack.
#[test]
fn msgpack_lite_peers_interoperate() {
    let lite = |library, buffered| Setup {
        library,
        ..Setup::plain("msgpack", buffered)
    };
    interop_all(&[
        (Peer::Rust, Peer::Js, lite(Library::Lite01, false)),
        (Peer::Rust, Peer::Js, lite(Library::Lite02, true)),
        (Peer::Js, Peer::Rust, lite(Library::Lite01, true)),
        (Peer::Js, Peer::Rust, lite(Library::Lite02, false)),
    ]);
}

/// The original's later TCP stack (nmsg-tcp), which writes `e: ""` on every
/// response: its client against the Rust server, and the Rust client against
/// its server, whose answers must reach the Rust callbacks.
#[test]
fn nmsg_tcp_dialect_interoperates() {
    let tcp = |buffered| Setup {
        library: Library::Lite02,
        dialect: Dialect::NmsgTcp,
        ..Setup::plain("msgpack", buffered)
    };
    interop_all(&[
        (Peer::Rust, Peer::Js, tcp(true)),
        (Peer::Js, Peer::Rust, tcp(false)),
    ]);
}

/// The seed release's dialect (nmsg 1.0.2, msgpack-lite 0.1.17): a JavaScript
/// client of it against the Rust server, which answers in `{"b": ..}` bulks
/// when it buffers; and the Rust client against a JavaScript server of it,
/// echo bug on, unbuffered, and buffered with its bulks fixed to that form.
#[test]
fn seed_release_dialect_interoperates() {
    let seed = |codec, buffered| Setup {
        library: Library::Lite01,
        dialect: Dialect::Seed2016,
        ..Setup::plain(codec, buffered)
    };
    interop_all(&[
        (Peer::Rust, Peer::Js, seed("msgpack", true)),
        (Peer::Rust, Peer::Js, seed("json", false)),
        (Peer::Js, Peer::Rust, seed("msgpack", false)),
        (Peer::Js, Peer::Rust, seed("json", false)),
        (
            Peer::Js,
            Peer::Rust,
            Setup {
                keyed_bulks: true,
                ..seed("msgpack", true)
            },
        ),
    ]);
}

// ---------------------------------------------------------------------------
// malformed input
// ---------------------------------------------------------------------------

fn send_message(conn: &mut TcpStream, payload: &[u8]) {
    conn.write_all(&(payload.len() as u32).to_be_bytes())
        .unwrap();
    conn.write_all(payload).unwrap();
}

/// Reads one whole message (length prefix and payload) and decodes it as
/// MsgPack; a timeout is a failure.
fn read_message(conn: &mut TcpStream, what: &str) -> rmpv::Value {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut len = [0u8; 4];
    conn.read_exact(&mut len)
        .unwrap_or_else(|e| panic!("no {what}: {e}"));
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    conn.read_exact(&mut payload)
        .unwrap_or_else(|e| panic!("{what}: the message ended early: {e}"));
    let mut rest = payload.as_slice();
    let value =
        rmpv::decode::read_value(&mut rest).unwrap_or_else(|e| panic!("{what}: not MsgPack: {e}"));
    assert!(rest.is_empty(), "{what}: bytes after the value");
    value
}

/// Asserts that nothing arrives on `conn` for a while: here a read timeout is
/// the expected outcome.
fn assert_nothing_more(conn: &mut TcpStream, after: &str) {
    conn.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        Ok(0) => panic!("the connection closed after {after}"),
        Ok(n) => panic!("{n} unexpected bytes after {after}: {:02x?}", &buf[..n]),
        Err(e) => panic!("the connection failed after {after}: {e}"),
    }
}

/// The response `cb("hi")` to the echo with id `to`, as a map with its keys.
fn echo_answer(id: u64, to: u64) -> BTreeMap<String, rmpv::Value> {
    BTreeMap::from([
        ("i".to_owned(), rmpv::Value::from(id)),
        ("a".to_owned(), rmpv::Value::Array(vec!["hi".into()])),
        ("r".to_owned(), rmpv::Value::from(to)),
        ("f".to_owned(), rmpv::Value::from(1)),
    ])
}

fn as_frame(value: rmpv::Value) -> BTreeMap<String, rmpv::Value> {
    match value {
        rmpv::Value::Map(entries) => entries
            .into_iter()
            .map(|(k, v)| (k.as_str().expect("a string key").to_owned(), v))
            .collect(),
        other => panic!("expected a frame (map), got {other}"),
    }
}

/// `echo("hi", cb)` with frame id `id`.
fn echo_hi(id: u8) -> Vec<u8> {
    vec![
        0x84, 0xa1, b'i', id, 0xa1, b'e', 0xa4, b'e', b'c', b'h', b'o', 0xa1, b'a', 0x91, 0xa2,
        b'h', b'i', 0xa1, b'c', 0x91, 1,
    ]
}

/// The Rust conformance server answers the next valid frame on a connection
/// that sent malformed messages (and answers nothing else), closes a
/// connection whose framing broke, goes on serving the others, and reports
/// each of the five errors.
#[test]
fn rust_server_survives_malformed_messages_and_broken_framing() {
    let (mut srv, addr) = start_server(Peer::Rust, &Setup::plain("msgpack", false));
    let mut conn = TcpStream::connect(&addr).unwrap();
    // malformed: a string, a frame without `i`, a callback position past the end, undecodable bytes
    send_message(&mut conn, &[0xa3, b'b', b'a', b'd']);
    send_message(&mut conn, &[0x81, 0xa1, b'e', 0xa1, b'x']);
    send_message(
        &mut conn,
        &[
            0x83, 0xa1, b'i', 1, 0xa1, b'e', 0xa1, b'x', 0xa1, b'c', 0x91, 5,
        ],
    );
    send_message(&mut conn, &[0xc1, 0xc1]);
    // then a valid echo("hi", cb) on the same connection: its answer is the
    // server's first frame on this connection
    send_message(&mut conn, &echo_hi(2));
    let answer = read_message(&mut conn, "answer after malformed messages");
    assert_eq!(as_frame(answer), echo_answer(1, 2));
    assert_nothing_more(&mut conn, "the answer to the first echo");

    // broken framing on another connection: closed (a read timeout means it stayed open)
    let mut broken = TcpStream::connect(&addr).unwrap();
    broken
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    broken.write_all(&[0x7f, 0xff, 0xff, 0xff, 0]).unwrap();
    let mut buf = [0u8; 8];
    match broken.read(&mut buf) {
        Ok(0) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ) => {}
        Ok(n) => panic!("the broken connection got {n} bytes instead of being closed"),
        Err(e) => panic!("the broken connection stays open ({e})"),
    }

    // the first connection and new clients are still served
    send_message(&mut conn, &echo_hi(3));
    let answer = read_message(&mut conn, "answer after another connection broke");
    assert_eq!(as_frame(answer), echo_answer(2, 3));
    assert_nothing_more(&mut conn, "the answer to the second echo");
    let (_client, client_report) =
        run_client(Peer::Rust, &addr, &Setup::plain("msgpack", false), false);
    check_report(
        "malformed input",
        "client",
        &client_report,
        Expect::bulks(false),
    );

    drop((conn, broken));
    let report = finish_server(&mut srv);
    let errors: Vec<u64> = ERROR_FIELDS.iter().map(|k| field(&report, k)).collect();
    // three malformed frames, one undecodable message, one broken framing
    assert_eq!(
        errors,
        [5, 0, 0, 0, 0],
        "the server's report of {ERROR_FIELDS:?}: {report:?}"
    );
    assert_eq!(field(&report, "unclosed"), 0);
}

/// A frame (a map with string keys) in MsgPack.
fn frame(fields: &[(&str, rmpv::Value)]) -> Vec<u8> {
    let map = rmpv::Value::Map(
        fields
            .iter()
            .map(|(k, v)| (rmpv::Value::from(*k), v.clone()))
            .collect(),
    );
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &map).unwrap();
    out
}

fn list(items: &[rmpv::Value]) -> rmpv::Value {
    rmpv::Value::Array(items.to_vec())
}

/// A server counts a response to a frame it never sent as stray, and a second
/// response to a callback it already had answered as a duplicate, and goes on.
fn server_reports_stray_and_duplicate_responses(peer: Peer) {
    use rmpv::Value as V;
    let (mut srv, addr) = start_server(peer, &Setup::plain("msgpack", false));
    let mut conn = TcpStream::connect(&addr).unwrap();
    // a response to frame 999, which the server never sent
    send_message(
        &mut conn,
        &frame(&[
            ("i", V::from(1)),
            ("a", list(&[])),
            ("r", V::from(999)),
            ("f", V::from(0)),
        ]),
    );
    // countdown(1, cb): the server answers cb(1, next)
    send_message(
        &mut conn,
        &frame(&[
            ("i", V::from(2)),
            ("e", V::from("countdown")),
            ("a", list(&[V::from(1)])),
            ("c", list(&[V::from(1)])),
        ]),
    );
    let answer = as_frame(read_message(&mut conn, "answer to countdown"));
    assert_eq!(
        (&answer["a"], &answer["c"], &answer["r"], &answer["f"]),
        (
            &list(&[V::from(1)]),
            &list(&[V::from(1)]),
            &V::from(2),
            &V::from(1)
        ),
        "countdown(1, cb) answered {answer:?}"
    );
    let next = answer["i"].clone();
    // next(cb2): the server answers cb2("done")
    let call_next = |id: u64| {
        frame(&[
            ("i", V::from(id)),
            ("a", list(&[])),
            ("c", list(&[V::from(0)])),
            ("r", next.clone()),
            ("f", V::from(1)),
        ])
    };
    send_message(&mut conn, &call_next(3));
    let done = as_frame(read_message(&mut conn, "answer to next(cb2)"));
    assert_eq!(
        (&done["a"], &done["r"], &done["f"]),
        (&list(&[V::from("done")]), &V::from(3), &V::from(0)),
        "next(cb2) answered {done:?}"
    );
    // next(cb2) once more: a duplicate, which gets no answer
    send_message(&mut conn, &call_next(4));
    assert_nothing_more(&mut conn, "a second call of next");
    drop(conn);
    let report = finish_server(&mut srv);
    let counts: Vec<u64> = ERROR_FIELDS.iter().map(|k| field(&report, k)).collect();
    assert_eq!(
        counts,
        [0, 1, 1, 0, 0],
        "the {peer:?} server's report of {ERROR_FIELDS:?}: {report:?}"
    );
}

#[test]
fn rust_server_reports_stray_and_duplicate_responses() {
    server_reports_stray_and_duplicate_responses(Peer::Rust);
}

#[test]
fn js_server_reports_stray_and_duplicate_responses() {
    server_reports_stray_and_duplicate_responses(Peer::Js);
}

// ---------------------------------------------------------------------------
// Buffering::Cycle against the JavaScript peer
// ---------------------------------------------------------------------------

/// A Rust client with `Buffering::Cycle` sends the frames of one cycle as one
/// bulk message: the JavaScript server counts exactly one bulk per cycle, with
/// every frame of it, answers them all, and no answer comes before the cycle
/// has ended.
#[test]
fn cycle_buffering_sends_one_bulk_per_cycle_to_the_js_peer() {
    use nmsg::{args, Buffering, Client};
    let (mut srv, addr) = start_server(Peer::Js, &Setup::plain("msgpack", false));
    let cycle = Duration::from_millis(100);
    let rounds = [5u64, 3];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = Client::tcp(addr).buffering(Buffering::Cycle(cycle)).start();
        tokio::time::timeout(Duration::from_secs(10), client.connected())
            .await
            .expect("the client did not connect to the JavaScript server");
        for n in rounds {
            let start = Instant::now();
            // All emitted at once: one cycle.
            let calls: Vec<_> = (0..n)
                .map(|i| client.router().request::<(u64,)>("echo", args![i]))
                .collect();
            let answers = tokio::time::timeout(
                Duration::from_secs(10),
                futures_util::future::join_all(calls),
            )
            .await
            .expect("no answers within 10 s");
            let elapsed = start.elapsed();
            for (i, answer) in answers.into_iter().enumerate() {
                assert_eq!(answer.expect("an answer").0, i as u64);
            }
            assert!(
                elapsed >= cycle,
                "{n} echoes answered after {elapsed:?}, before the cycle of {cycle:?} ended"
            );
        }
        client.stop().await;
    });
    let report = finish_server(&mut srv);
    for key in ERROR_FIELDS {
        assert_eq!(
            field(&report, key),
            0,
            "the server reported {key}: {report:?}"
        );
    }
    assert_eq!(
        (field(&report, "bulks"), field(&report, "bulk_frames")),
        (rounds.len() as u64, rounds.iter().sum()),
        "one bulk per cycle, with every frame of the cycle: {report:?}"
    );
}

// ---------------------------------------------------------------------------
// the README's Node.js example
// ---------------------------------------------------------------------------

/// The first fenced block of kind `lang` in the section of README.md under
/// `heading`.
fn readme_block(heading: &str, lang: &str) -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    let section = readme
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no heading {heading:?}"))
        .1;
    let section = section.split("\n## ").next().unwrap_or_default();
    let fence = format!("```{lang}\n");
    let block = section
        .split_once(&fence)
        .unwrap_or_else(|| panic!("README.md has no {fence:?} block under {heading:?}"))
        .1;
    block
        .split_once("\n```")
        .unwrap_or_else(|| panic!("the {lang} block under {heading:?} does not end"))
        .0
        .to_owned()
}

/// The README's "Talking to Node.js" example: its JavaScript server, run as
/// README.md has it (only its port is replaced by a free one), and the Rust
/// client of the README, which calls `greet` and then the callback that came
/// with the answer.
#[test]
fn readme_node_example_works() {
    js_ready();
    let snippet = readme_block("## Talking to Node.js", "js");
    // Runs before the snippet: every server listens on a free port instead of
    // the one it names, and prints it.
    let prelude = r#"(() => {
  const net = require('node:net');
  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function (_port, host, ...rest) {
    this.once('listening', () => console.log('LISTENING ' + this.address().address + ':' + this.address().port));
    return listen.call(this, 0, host, ...rest);
  };
})();
"#;
    let mut node = Guarded::spawn(
        "the README's Node.js server",
        Command::new("node")
            .args(["-e", &format!("{prelude}{snippet}")])
            .current_dir(root()),
    );
    let first = node.line(START_TIMEOUT, "LISTENING line");
    let addr = first
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("node printed {first:?} instead of its address"))
        .to_owned();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let greeting = runtime.block_on(async move {
        use nmsg::{args, Client, RemoteCallback};
        let client = Client::tcp(addr).start();
        let (greeting, answer): (String, RemoteCallback) = tokio::time::timeout(
            Duration::from_secs(10),
            client.router().request("greet", args!["Ann"]),
        )
        .await
        .expect("no answer to greet within 10 s")
        .expect("greet failed");
        answer.call(("thank you",)).unwrap();
        client.stop().await;
        greeting
    });
    assert_eq!(greeting, "hello, Ann");
    let said = node.line(Duration::from_secs(10), "line from the JavaScript closure");
    assert_eq!(said, "Rust says: thank you");
    node.close_stdin();
}

// ---------------------------------------------------------------------------
// the JavaScript peer's own checks
// ---------------------------------------------------------------------------

/// Runs a script of tests/js to its end; returns its stdout lines and status.
fn run_js_script(script: &str, args: &[&str]) -> (Guarded, Vec<String>, ExitStatus) {
    js_ready();
    let mut child = Guarded::spawn(
        format!("node {script} {}", args.join(" ")),
        Command::new("node")
            .arg(js_dir().join(script))
            .args(args)
            .current_dir(js_dir()),
    );
    child.close_stdin();
    let lines = child.rest(RUN_TIMEOUT);
    let status = child.wait(RUN_TIMEOUT);
    (child, lines, status)
}

/// The names of the vectors in one of the project's copies, `tests/data/FILE`.
fn vector_names(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("tests/data").join(file)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["vectors"]
        .as_array()
        .expect("a list of vectors")
        .iter()
        .map(|v| v["name"].as_str().expect("a vector name").to_owned())
        .collect()
}

/// The JavaScript peer's codecs and frame builder reproduce every wire vector
/// of tests/data/wire.json (its default input), byte for byte.
#[test]
fn js_peer_matches_the_wire_vectors() {
    check_vectors_with_js("wire.json", &[]);
}

/// The same in the 2016 dialect with msgpack-lite 0.1.17, against the seed
/// release's vectors, tests/data/wire-2016.json: every message a `{"b": ..}`
/// bulk, `e: ""` on responses, float64 numbers, CESU-8.
#[test]
fn js_peer_matches_the_2016_wire_vectors() {
    check_vectors_with_js("wire-2016.json", &["--dialect", "2016"]);
}

fn check_vectors_with_js(file: &str, args: &[&str]) {
    let (_child, lines, status) = run_js_script("check-vectors.js", args);
    let names = vector_names(file);
    assert!(!names.is_empty(), "tests/data/{file} holds no vectors");
    let mut expected: Vec<String> = names.iter().map(|n| format!("PASS {n}")).collect();
    expected.push(format!("{} passed, 0 failed", names.len()));
    assert_eq!(lines, expected, "check-vectors.js:\n{}", lines.join("\n"));
    assert!(status.success(), "check-vectors.js exited with {status}");
}

/// The JavaScript peer's self-test: its client against its server in the four
/// codec and buffering combinations, with msgpack-lite 0.1 and 0.2, in the 2016
/// dialect, with sessions (and a plain client of a session server), and
/// against its echoing server, both reports clean; and the wire vectors of
/// both dialects.
#[test]
fn js_self_test_passes() {
    let (_child, lines, status) = run_js_script("self-test.js", &[]);
    let output = lines.join("\n");
    let names: Vec<&str> = lines
        .iter()
        .map(|l| {
            l.strip_prefix("PASS ")
                .and_then(|rest| rest.split(':').next())
                .unwrap_or(l)
        })
        .collect();
    assert_eq!(
        names,
        [
            "msgpack",
            "msgpack buffered",
            "json",
            "json buffered",
            "msgpack msgpack-lite-0.1",
            "msgpack msgpack-lite-0.2 buffered",
            "2016 msgpack msgpack-lite-0.1",
            "nmsg-tcp msgpack-lite-0.2 buffered",
            "msgpack session",
            "json buffered session",
            "session server, plain client",
            "2016 json echo-bug, later client",
            "wire vectors",
            "wire vectors 2016",
            "14 passed, 0 failed"
        ],
        "self-test.js:\n{output}"
    );
    assert!(status.success(), "self-test.js exited with {status}");
}
