//! Sessions between processes, through the fault-injecting proxy
//! (`tests/proxy_support`): the conformance peers (`examples/conformance.rs`
//! and the JavaScript peer of `tests/js`, both with `--session`), in every
//! pairing of client and server, cut at random points several times a second
//! (every event exactly once and in order, every callback exactly once, no
//! scenario failing, `stats` exact); behind a half-open connection (found by
//! the heartbeat, then resumed).
//!
//! Needs Node.js 20 or later on PATH, as `tests/interop.rs`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

mod js_support;
mod proxy_support;
use js_support::{js_dir, js_ready};
use proxy_support::{Faults, Proxy};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One test at a time: each loads both cores, and the heartbeat tests time
/// what they see.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// child processes
// ---------------------------------------------------------------------------

/// A child process, killed when dropped; its stdout read by line, its stderr
/// kept and shown when the test fails.
struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Proc {
    fn spawn(label: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        let stdout = child.stdout.take().unwrap();
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
        let (mut pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Proc {
            label: label.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        }
    }

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

    /// The remaining lines of stdout, to its end.
    fn rest(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
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

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- stderr of {} ----\n{}---- end ----",
                self.label,
                String::from_utf8_lossy(&self.stderr.lock().unwrap())
            );
        }
    }
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
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--example", "conformance"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
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

#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    Rust,
    Js,
}

/// A conformance peer's command: `mode` (serve or connect) at `addr`, with
/// sessions.
fn conformance(peer: Peer, mode: &str, addr: &str) -> Command {
    let mut cmd = match peer {
        Peer::Rust => Command::new(rust_peer()),
        Peer::Js => node("conformance.js"),
    };
    cmd.args([mode, "--addr", addr, "--session"]);
    if mode == "serve" {
        cmd.arg("--until-eof");
    }
    cmd
}

fn node(script: &str) -> Command {
    js_ready();
    let mut cmd = Command::new("node");
    cmd.arg(js_dir().join(script));
    cmd
}

/// A conformance server (`serve --until-eof`) and its address.
fn start_server(label: &str, mut cmd: Command) -> (Proc, SocketAddr) {
    let proc = Proc::spawn(label, &mut cmd);
    let line = proc.line(START_TIMEOUT, "LISTENING line");
    let addr = line
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("{label}: expected LISTENING, got {line:?}"))
        .parse()
        .unwrap();
    (proc, addr)
}

type Report = BTreeMap<String, u64>;

fn parse_report(line: &str) -> Option<Report> {
    line.strip_prefix("REPORT ")?
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn report_of(label: &str, lines: &[String]) -> Report {
    lines
        .iter()
        .rev()
        .find_map(|l| parse_report(l))
        .unwrap_or_else(|| panic!("{label}: no report line in\n{}", lines.join("\n")))
}

/// Panics unless every error field of `report` is zero: no protocol error,
/// stray or duplicate response, handler failure, unhandled event, nor, in a
/// session, a duplicate data message, a lost session or callback, an
/// overflowing replay buffer. (The Rust peer's report has the fields it
/// knows; a missing one counts as zero.)
fn assert_clean(label: &str, report: &Report) {
    assert_clean_but(label, report, &[]);
}

/// [`assert_clean`], but for the fields of `expected`.
fn assert_clean_but(label: &str, report: &Report, expected: &[&str]) {
    for field in [
        "protocol_errors",
        "stray",
        "duplicates",
        "handler_failures",
        "unhandled",
        "sessions_expired",
        "sessions_lost",
        "lost_callbacks",
        "lost_responses",
        "dropped_on_loss",
        "replay_overflow",
        "session_duplicates",
    ]
    .into_iter()
    .filter(|f| !expected.contains(f))
    {
        assert_eq!(
            report.get(field).copied().unwrap_or(0),
            0,
            "{label}: {field} in {report:?}"
        );
    }
}

/// Ends a server (stdin closed) and returns its report; its stderr goes to
/// the test's output (shown when the test fails).
fn finish_server(mut server: Proc) -> Report {
    server.close_stdin();
    let lines = server.rest(RUN_TIMEOUT);
    let label = server.label.clone();
    let _ = server.child.wait();
    eprintln!("---- stderr of {label} ----\n{}", server.stderr_text());
    report_of(&label, &lines)
}

/// Faults that cut mid-message several times a second, in both directions,
/// yet let a 1 MiB message through now and then.
fn cutting() -> Faults {
    Faults {
        cut_after_bytes: Some(20_000..=4_000_000),
        cut_after_time: Some(Duration::from_millis(80)..=Duration::from_millis(400)),
    }
}

/// Runs a conformance client to its end: its lines, and whether it passed.
fn run_client(label: &str, mut cmd: Command) -> (Vec<String>, Report) {
    let client = Proc::spawn(label, &mut cmd);
    let lines = client.rest(RUN_TIMEOUT);
    eprintln!("---- stderr of {label} ----\n{}", client.stderr_text());
    let failed: Vec<&String> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failed.is_empty() && lines.iter().any(|l| l.ends_with(" 0 failed")),
        "{label} failed:\n{}",
        lines.join("\n")
    );
    let report = report_of(label, &lines);
    (lines, report)
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

/// A conformance client and server with sessions, through a proxy that cuts
/// several times a second (mid-message, either direction): the conformance
/// scenarios, then 100,000 events each way, 10,000 requests with callbacks
/// three deep and eight 1 MiB echoes; every scenario passes (no call fails,
/// each event exactly once and in order, each callback exactly once), `stats`
/// is exact, neither report shows an error, and every connection after the
/// first resumed the one session.
fn resume_through_random_cuts(server: Peer, client: Peer, seed: u64) {
    resume_through_random_cuts_with(server, client, seed, &[], ["100000", "10000", "8"]);
}

/// [`resume_through_random_cuts`] with `flags` on both peers and `sizes`
/// (events, requests, 1 MiB echoes).
fn resume_through_random_cuts_with(
    server: Peer,
    client: Peer,
    seed: u64,
    flags: &[&str],
    sizes: [&str; 3],
) -> (Report, Report) {
    let _serial = serial();
    let (server_proc, addr) = start_server(&format!("{server:?} server"), {
        let mut c = conformance(server, "serve", "127.0.0.1:0");
        c.args(flags);
        c
    });
    let proxy = Proxy::start(addr, seed);
    proxy.set_faults(cutting());
    let label = format!("{client:?} client");
    let (_, client_report) = run_client(&label, {
        let mut c = conformance(client, "connect", &proxy.addr().to_string());
        c.args(flags);
        c.args([
            "--events",
            sizes[0],
            "--requests",
            sizes[1],
            "--big",
            sizes[2],
        ]);
        c
    });
    let stats = proxy.stats();
    let server_report = finish_server(server_proc);
    eprintln!("proxy seed {}: {stats:?}", proxy.seed());
    assert_clean(&label, &client_report);
    assert_clean(&format!("{server:?} server"), &server_report);
    assert!(stats.cuts() >= 3, "too few cuts to tell: {stats:?}");
    // Every handshake after the first resumed (a connection cut before its
    // welcome makes none).
    assert_eq!(client_report["sessions_new"], 1, "{client_report:?}");
    assert!(
        client_report["sessions_resumed"] >= 3
            && client_report["sessions_resumed"] < stats.accepted,
        "{client_report:?}, {stats:?}"
    );
    (client_report, server_report)
}

#[test]
fn js_client_and_js_server_resume_through_random_cuts() {
    resume_through_random_cuts(Peer::Js, Peer::Js, 18);
}

#[test]
fn rust_client_and_rust_server_resume_through_random_cuts() {
    resume_through_random_cuts(Peer::Rust, Peer::Rust, 19);
}

#[test]
fn rust_client_and_js_server_resume_through_random_cuts() {
    resume_through_random_cuts(Peer::Js, Peer::Rust, 20);
}

#[test]
fn js_client_and_rust_server_resume_through_random_cuts() {
    resume_through_random_cuts(Peer::Rust, Peer::Js, 21);
}

/// Bulks (buffered peers) in JSON, each way between the languages, through
/// the same cuts: a bulk is one data message, kept and resent whole.
/// Smaller runs: 20,000 events each way, 2,000 requests, two 1 MiB echoes.
#[test]
fn buffered_json_peers_resume_through_random_cuts() {
    let flags = ["--codec", "json", "--buffered"];
    let sizes = ["20000", "2000", "2"];
    for (server, client, seed) in [(Peer::Js, Peer::Rust, 22), (Peer::Rust, Peer::Js, 23)] {
        let (c, s) = resume_through_random_cuts_with(server, client, seed, &flags, sizes);
        assert!(
            c["bulks"] > 0 && s["bulks"] > 0,
            "no bulks: client {c:?}, server {s:?}"
        );
    }
}

/// A JavaScript session client behind a half-open connection (the proxy
/// forwards nothing and closes nothing): its call completes after the
/// heartbeat finds the connection dead, within interval + timeout, on a
/// resumed session.
#[test]
fn js_client_finds_a_half_open_connection_by_its_heartbeat_and_resumes() {
    let _serial = serial();
    half_open_js_client(Peer::Js);
}

#[test]
fn js_client_of_the_rust_server_finds_a_half_open_connection_by_its_heartbeat_and_resumes() {
    let _serial = serial();
    half_open_js_client(Peer::Rust);
}

fn half_open_js_client(peer: Peer) {
    let (interval, timeout) = (300u64, 400u64);
    let label = format!("{peer:?} server");
    let (server, addr) = start_server(&label, {
        let mut c = conformance(peer, "serve", "127.0.0.1:0");
        c.args(["--heartbeat-interval", &interval.to_string()]);
        c.args(["--heartbeat-timeout", &timeout.to_string()]);
        c
    });
    let proxy = Proxy::start(addr, 3);
    let mut probe = Proc::spawn("js probe", &mut {
        let mut c = node("session-probe.js");
        let proxy_addr = proxy.addr().to_string();
        c.args(["--addr", &proxy_addr]);
        c.args(["--heartbeat-interval", &interval.to_string()]);
        c.args(["--heartbeat-timeout", &timeout.to_string()]);
        c
    });
    assert_eq!(probe.line(START_TIMEOUT, "READY"), "READY");
    probe.send("echo");
    let line = probe.line(RUN_TIMEOUT, "ECHO");
    assert!(line.contains("sessions_resumed=0"), "{line}");
    proxy.stall();
    let stalled = Instant::now();
    probe.send("echo");
    let line = probe.line(RUN_TIMEOUT, "ECHO after the stall");
    let took = stalled.elapsed();
    assert!(
        line.contains("sessions_resumed=1") && line.contains("heartbeat_timeouts=1"),
        "{line}"
    );
    // The ping goes at most `interval` after the last traffic (here: before
    // the stall), the connection is given up `timeout` later; the rest is the
    // reconnect, on a loaded machine.
    assert!(
        took < Duration::from_millis(interval + timeout + 1000),
        "the half-open connection took {took:?} to find (interval {interval} ms, timeout {timeout} ms): {line}"
    );
    assert!(
        took >= Duration::from_millis(timeout),
        "resumed before the heartbeat could time out ({took:?}): not the heartbeat's doing"
    );
    probe.send("report");
    let report = parse_report(&probe.line(RUN_TIMEOUT, "report")).unwrap();
    assert_clean("js probe", &report);
    probe.close_stdin();
    probe.rest(RUN_TIMEOUT);
    proxy.release_stalled();
    assert_clean(&label, &finish_server(server));
}

// ---------------------------------------------------------------------------
// a Rust client in the test, against the Rust conformance server
// ---------------------------------------------------------------------------

/// The next client event that `pick` takes, within `timeout`.
async fn next_event<T>(
    events: &mut tokio::sync::broadcast::Receiver<nmsg::ClientEvent>,
    timeout: Duration,
    what: &str,
    mut pick: impl FnMut(&nmsg::ClientEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {timeout:?}"))
            .expect("the client's events ended");
        if let Some(found) = pick(&event) {
            return found;
        }
    }
}

/// The server process killed and another started in its place (on another
/// port, behind the same proxy address): the client's session cannot resume.
/// Its pending replies fail with `Error::SessionLost` within a second of the
/// new connection, and the plain emits the old server never received are
/// sent again on the new session, arrive in order, and are counted in
/// `ClientEvent::SessionLost`; the new server's `stats` is exact.
async fn restarted_server(peer: Peer) {
    use nmsg::{Client, ClientEvent, Error, SessionOptions, Value};
    let (server, addr) = start_server(
        &format!("{peer:?} server"),
        conformance(peer, "serve", "127.0.0.1:0"),
    );
    let proxy = Proxy::start(addr, 6);
    let client = Client::tcp(proxy.addr().to_string())
        .session(SessionOptions::new())
        .start();
    let mut events = client.events();
    let r = client.router().clone();
    next_event(&mut events, START_TIMEOUT, "first session", |e| {
        matches!(e, ClientEvent::SessionStarted { .. }).then_some(())
    })
    .await;
    // Requests the server takes and never answers (it ignores unknown
    // events): pending when it dies.
    let pending: Vec<_> = (0..5)
        .map(|k| tokio::spawn(r.request::<(Value,)>("no-such-event", (k,))))
        .collect();
    let (echoed,): (String,) = r.request("echo", ("through",)).await.unwrap();
    assert_eq!(echoed, "through");
    // Plain emits the server never gets: the link is stalled, then the
    // server dies.
    proxy.stall();
    const EMITS: u64 = 500;
    for k in 0..EMITS {
        r.emit("seq", (k,)).unwrap();
    }
    drop(server); // killed
    let (server, addr) = start_server(
        &format!("{peer:?} server again"),
        conformance(peer, "serve", "127.0.0.1:0"),
    );
    proxy.set_target(addr);
    proxy.release_stalled(); // the client sees its connection close
                             // The new connection's handshake tells the client its session is gone.
    let (resent, dropped) = next_event(&mut events, RECONNECT_WITHIN, "SessionLost", |e| match e {
        ClientEvent::SessionLost {
            resent, dropped, ..
        } => Some((*resent, *dropped)),
        _ => None,
    })
    .await;
    let new_connection = tokio::time::Instant::now();
    for (k, call) in pending.into_iter().enumerate() {
        let outcome = tokio::time::timeout_at(new_connection + Duration::from_secs(1), call)
            .await
            .unwrap_or_else(|_| {
                panic!("pending reply {k} still pending a second after the new connection")
            })
            .unwrap();
        assert!(
            matches!(outcome, Err(Error::SessionLost { .. })),
            "pending reply {k}: {outcome:?}"
        );
    }
    assert_eq!(resent as u64, EMITS, "resent ({dropped} dropped)");
    let (next, errors): (u64, u64) = r.request("seq-check", ()).await.unwrap();
    assert_eq!(
        (next, errors),
        (EMITS, 0),
        "the resent emits at the new server (in order, out of order)"
    );
    let (stats,): (Value,) = r.request("stats", ()).await.unwrap();
    let got = (stats["events"].as_u64(), stats["last"].as_str());
    assert!(
        got == (Some(EMITS + 1), Some("seq-check")) || got == (Some(EMITS + 2), Some("stats")),
        "stats of the new server: {stats}"
    );
    client.stop().await;
    let report = finish_server(server);
    assert_clean_but("server again", &report, &["sessions_expired"]);
    assert_eq!(report["sessions_expired"], 1, "{report:?}");
}

/// A runtime for a test that holds [`serial`] (a lock not held across awaits).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_restarted_rust_server_fails_pending_replies_with_session_lost_and_gets_the_emits_again() {
    let _serial = serial();
    runtime().block_on(restarted_server(Peer::Rust));
}

#[test]
fn a_restarted_js_server_fails_pending_replies_with_session_lost_and_gets_the_emits_again() {
    let _serial = serial();
    runtime().block_on(restarted_server(Peer::Js));
}

/// How long a reconnect may take on a loaded machine, backoff included.
const RECONNECT_WITHIN: Duration = Duration::from_secs(5);
/// What a reconnect after a detected break may add to the heartbeat's
/// interval + timeout on a loaded machine.
const RECONNECT_ALLOWANCE: Duration = Duration::from_millis(1500);

/// A half-open connection between a Rust client and a server (the
/// proxy forwards nothing and closes nothing): the heartbeat (interval and
/// timeout set short on both ends) finds it within interval + timeout, the
/// client resumes, and a call made into the dead connection completes.
#[test]
fn a_rust_client_finds_a_half_open_connection_by_its_heartbeat_and_resumes() {
    let _serial = serial();
    runtime().block_on(half_open_rust_client(Peer::Rust));
}

#[test]
fn a_rust_client_of_the_js_server_finds_a_half_open_connection_by_its_heartbeat_and_resumes() {
    let _serial = serial();
    runtime().block_on(half_open_rust_client(Peer::Js));
}

async fn half_open_rust_client(peer: Peer) {
    use nmsg::{Client, ClientEvent, SessionOptions};
    let (interval, timeout) = (300u64, 400u64);
    let label = format!("{peer:?} server");
    let (server, addr) = start_server(&label, {
        let mut c = conformance(peer, "serve", "127.0.0.1:0");
        c.args(["--heartbeat-interval", &interval.to_string()]);
        c.args(["--heartbeat-timeout", &timeout.to_string()]);
        c
    });
    let proxy = Proxy::start(addr, 7);
    let client = Client::tcp(proxy.addr().to_string())
        .session(
            SessionOptions::new()
                .heartbeat_interval(Duration::from_millis(interval))
                .heartbeat_timeout(Duration::from_millis(timeout)),
        )
        .start();
    let mut events = client.events();
    let r = client.router().clone();
    next_event(&mut events, START_TIMEOUT, "first session", |e| {
        matches!(e, ClientEvent::SessionStarted { .. }).then_some(())
    })
    .await;
    let (back,): (String,) = r.request("echo", ("before",)).await.unwrap();
    assert_eq!(back, "before");
    proxy.stall();
    let stalled = Instant::now();
    let (back,): (String,) = r.request("echo", ("across",)).await.unwrap();
    let took = stalled.elapsed();
    assert_eq!(back, "across");
    next_event(&mut events, Duration::from_secs(1), "Resumed", |e| {
        matches!(e, ClientEvent::Resumed { .. }).then_some(())
    })
    .await;
    assert!(
        took < Duration::from_millis(interval + timeout) + RECONNECT_ALLOWANCE,
        "the half-open connection took {took:?} to find (interval {interval} ms, timeout {timeout} ms)"
    );
    assert!(
        took >= Duration::from_millis(timeout),
        "resumed before the heartbeat could time out ({took:?}): not the heartbeat's doing"
    );
    client.stop().await;
    proxy.release_stalled();
    let report = finish_server(server);
    assert_clean(&label, &report);
    assert_eq!(report["sessions_resumed"], 1, "{report:?}");
}

/// The JavaScript client's side of a restarted server (the Rust one): the
/// handshake says the session is gone, its pending callbacks are void (it
/// has no error to give them) and counted, and its plain emits the old
/// server never got are sent again, arrive in order and are counted.
#[test]
fn a_js_client_of_a_restarted_server_voids_its_callbacks_and_sends_the_emits_again() {
    let _serial = serial();
    let (server, addr) = start_server(
        "Rust server",
        conformance(Peer::Rust, "serve", "127.0.0.1:0"),
    );
    let proxy = Proxy::start(addr, 8);
    let mut probe = Proc::spawn("js probe", &mut {
        let mut c = node("session-probe.js");
        c.args(["--addr", &proxy.addr().to_string()]);
        c
    });
    assert_eq!(probe.line(START_TIMEOUT, "READY"), "READY");
    probe.send("pending 5");
    assert_eq!(probe.line(RUN_TIMEOUT, "PENDING"), "PENDING 5");
    probe.send("echo");
    let line = probe.line(RUN_TIMEOUT, "ECHO");
    assert!(line.starts_with("ECHO"), "{line}");
    proxy.stall();
    probe.send("emit 500");
    assert_eq!(probe.line(RUN_TIMEOUT, "EMITTED"), "EMITTED 500");
    drop(server); // killed
    let (server, addr) = start_server(
        "Rust server again",
        conformance(Peer::Rust, "serve", "127.0.0.1:0"),
    );
    proxy.set_target(addr);
    proxy.release_stalled();
    // Dropped: the calls not yet acknowledged when the link stalled (the
    // ack may not have come yet), void either way.
    let line = probe.line(RECONNECT_WITHIN, "LOST");
    assert!(
        line.starts_with("LOST callbacks=5 resent=500 dropped="),
        "{line}"
    );
    probe.send("seq-check");
    assert_eq!(probe.line(RUN_TIMEOUT, "SEQ"), "SEQ next=500 errors=0");
    probe.send("report");
    let report = parse_report(&probe.line(RUN_TIMEOUT, "report")).unwrap();
    // `dropped_on_loss`: the same calls, counted (0 to 6, as the acks came).
    assert_clean_but(
        "js probe",
        &report,
        &[
            "sessions_expired",
            "sessions_lost",
            "lost_callbacks",
            "dropped_on_loss",
        ],
    );
    assert_eq!(
        (
            report["sessions_expired"],
            report["sessions_lost"],
            report["lost_callbacks"],
            report["resent"]
        ),
        (1, 1, 5, 500),
        "{report:?}"
    );
    probe.close_stdin();
    probe.rest(RUN_TIMEOUT);
    let report = finish_server(server);
    assert_clean_but("Rust server again", &report, &["sessions_expired"]);
}

// ---------------------------------------------------------------------------
// a session client of a plain server
// ---------------------------------------------------------------------------

/// A conformance server without sessions.
fn plain_server(peer: Peer) -> (Proc, SocketAddr) {
    let mut cmd = match peer {
        Peer::Rust => Command::new(rust_peer()),
        Peer::Js => node("conformance.js"),
    };
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--until-eof"]);
    start_server(&format!("plain {peer:?} server"), cmd)
}

/// The JavaScript session client of the plain Rust server: no welcome within
/// its hello timeout, and it says the server does not support sessions.
#[test]
fn a_js_session_client_of_a_plain_server_says_the_server_does_not_support_sessions() {
    let _serial = serial();
    let (_server, addr) = plain_server(Peer::Rust);
    let probe = Proc::spawn("js probe", &mut {
        let mut c = node("session-probe.js");
        c.args(["--addr", &addr.to_string(), "--hello-timeout", "300"]);
        c
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !probe.stderr_text().contains("it does not support sessions") {
        assert!(
            Instant::now() < deadline,
            "no word of missing sessions: {}",
            probe.stderr_text()
        );
        assert!(
            probe.lines.try_recv().is_err(),
            "the probe got ready against a plain server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Rust session client of the plain JavaScript server: its attempts fail
/// with the error saying the server does not support sessions.
#[test]
fn a_rust_session_client_of_the_plain_js_server_says_the_server_does_not_support_sessions() {
    use nmsg::{Client, ClientEvent, SessionOptions};
    let _serial = serial();
    let (_server, addr) = plain_server(Peer::Js);
    runtime().block_on(async move {
        let client = Client::tcp(addr.to_string())
            .session(SessionOptions::new().hello_timeout(Duration::from_millis(300)))
            .start();
        let mut events = client.events();
        let error = next_event(
            &mut events,
            Duration::from_secs(10),
            "Reconnecting",
            |e| match e {
                ClientEvent::Reconnecting { error, .. } => Some(error.clone()),
                ClientEvent::SessionStarted { .. } => panic!("a session with a plain server"),
                _ => None,
            },
        )
        .await;
        assert!(error.contains("does not support sessions"), "{error}");
        client.stop().await;
    });
}

// ---------------------------------------------------------------------------
// a stale connection's hello, by hand
// ---------------------------------------------------------------------------

/// A hand-written session client over TCP (MessagePack, blocking, each
/// read bounded).
mod raw {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    use rmpv::Value;

    pub fn connect(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    pub fn write(stream: &mut TcpStream, pairs: &[(&str, Value)]) {
        let map = Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (Value::from(*k), v.clone()))
                .collect(),
        );
        let mut payload = Vec::new();
        rmpv::encode::write_value(&mut payload, &map).unwrap();
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend(payload);
        stream.write_all(&out).unwrap();
    }

    /// The next message; `Err` when the stream ended (or failed, or
    /// nothing came within the bound: `TimedOut`/`WouldBlock`).
    pub fn read(stream: &mut TcpStream) -> std::io::Result<Value> {
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix)?;
        let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut payload)?;
        Ok(rmpv::decode::read_value(&mut &payload[..]).unwrap())
    }

    pub fn get<'v>(map: &'v Value, key: &str) -> Option<&'v Value> {
        map.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    pub fn kind(map: &Value) -> Option<&str> {
        get(map, "x").and_then(Value::as_str)
    }

    pub fn hello(stream: &mut TcpStream, s: Option<&str>, n: u64) {
        let mut pairs = vec![("x", Value::from("hello")), ("v", Value::from(1))];
        if let Some(s) = s {
            pairs.push(("s", Value::from(s)));
            pairs.push(("n", Value::from(n)));
        }
        write(stream, &pairs);
    }

    /// The `echo` request numbered `i`, with its callback.
    pub fn echo(stream: &mut TcpStream, i: u64) {
        let pairs = [
            ("i", Value::from(i)),
            ("e", Value::from("echo")),
            ("a", Value::Array(vec![Value::from("hi")])),
            ("c", Value::Array(vec![Value::from(1)])),
        ];
        write(stream, &pairs);
    }

    /// Reads up to the next data message (a message without `x`), counting
    /// it; extension frames on the way are skipped.
    pub fn data(stream: &mut TcpStream, received: &mut u64) -> std::io::Result<Value> {
        loop {
            let message = read(stream)?;
            if kind(&message).is_none() {
                *received += 1;
                return Ok(message);
            }
        }
    }

    /// Reads up to the next extension frame of kind `x`, counting the data
    /// messages on the way.
    pub fn until(stream: &mut TcpStream, x: &str, received: &mut u64) -> Value {
        loop {
            let message = read(stream).unwrap_or_else(|e| panic!("waiting for {x}: {e}"));
            match kind(&message) {
                Some(k) if k == x => return message,
                Some(_) => {}
                None => *received += 1,
            }
        }
    }
}

/// A hello read after that of a newer connection of the same session (a
/// server busy when the client's connection was cut before its welcome
/// reads the hello the client wrote on it after the one it wrote on its next
/// connection, which acknowledged more since): the stale connection is
/// closed and the session goes on. Both servers ended the session (the
/// Rust one: "the client asked to resume having received 0 messages,
/// which does not fit what was written"; the JavaScript one expired it and
/// welcomed the stale connection to a new session), so the client's next
/// connection found it expired.
fn a_stale_hello_does_not_end_the_session(server: Peer) {
    use rmpv::Value;
    let _serial = serial();
    let label = format!("{server:?} server");
    let (server_proc, addr) = start_server(&label, conformance(server, "serve", "127.0.0.1:0"));
    let mut first = raw::connect(addr);
    raw::hello(&mut first, None, 0);
    let mut received = 0;
    let welcome = raw::until(&mut first, "welcome", &mut received);
    let s = raw::get(&welcome, "s")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    drop(first);

    // The server reads a first message within its hello wait (1 s): this
    // one comes after the next connection's.
    let mut stale = raw::connect(addr);
    let mut live = raw::connect(addr);
    raw::hello(&mut live, Some(&s), received);
    let welcome = raw::until(&mut live, "welcome", &mut received);
    assert_eq!(
        raw::get(&welcome, "z").and_then(Value::as_str),
        Some("resumed"),
        "{welcome}"
    );
    raw::echo(&mut live, 1);
    let reply = raw::data(&mut live, &mut received).expect("the echo's reply");
    assert_eq!(
        raw::get(&reply, "r").and_then(Value::as_u64),
        Some(1),
        "{reply}"
    );
    raw::write(
        &mut live,
        &[("x", Value::from("ack")), ("n", Value::from(received))],
    );
    // Answered once the ack before it was read.
    raw::write(
        &mut live,
        &[("x", Value::from("ping")), ("n", Value::from(received))],
    );
    raw::until(&mut live, "pong", &mut received);

    raw::hello(&mut stale, Some(&s), 0);
    // The server closes the stale connection, without a welcome.
    match raw::read(&mut stale) {
        Err(e)
            if e.kind() != std::io::ErrorKind::WouldBlock
                && e.kind() != std::io::ErrorKind::TimedOut => {}
        Err(e) => panic!("{label} left the stale connection open: {e}"),
        Ok(m) => panic!("{label} answered the stale connection: {m}"),
    }
    drop(stale);
    raw::echo(&mut live, 2);
    let reply = raw::data(&mut live, &mut received)
        .unwrap_or_else(|e| panic!("{label} ended the live connection: {e}"));
    assert_eq!(
        raw::get(&reply, "r").and_then(Value::as_u64),
        Some(2),
        "{reply}"
    );

    // And the client's next connection resumes the session.
    drop(live);
    let mut next = raw::connect(addr);
    raw::hello(&mut next, Some(&s), received);
    let welcome = raw::until(&mut next, "welcome", &mut received);
    assert_eq!(
        raw::get(&welcome, "z").and_then(Value::as_str),
        Some("resumed"),
        "{welcome}"
    );
    drop(next);
    finish_server(server_proc);
}

#[test]
fn a_stale_hello_does_not_end_a_session_of_the_rust_server() {
    a_stale_hello_does_not_end_the_session(Peer::Rust);
}

#[test]
fn a_stale_hello_does_not_end_a_session_of_the_js_server() {
    a_stale_hello_does_not_end_the_session(Peer::Js);
}
