//! The conformance peer, in Rust: one binary, two modes. It serves and
//! exercises the conformance events (echo, add, ping, pick-hand, countdown,
//! multi, notify, stats, integers, echo-text), like `tests/js/conformance.js`
//! in JavaScript. The
//! events, the client's scenarios and the report line are described in
//! `tests/js/CONFORMANCE.md`.
//!
//! ```text
//! cargo run --example conformance -- serve   --addr 127.0.0.1:0    [--codec msgpack|json] [--buffered] [--until-eof]
//! cargo run --example conformance -- connect --addr 127.0.0.1:7000 [--codec msgpack|json] [--buffered] [--peer-echoes]
//! ```
//!
//! Over TLS: `serve --tls-cert PEM --tls-key PEM` (the server's certificate
//! chain and key), `connect --tls-ca PEM --server-name NAME` (the CA that
//! signed the server's certificate, and the name the certificate must hold;
//! default `localhost`).
//!
//! `--peer-echoes` (connect): the server writes every message back to its
//! sender, as the TCP server of the original's nmsg 1.0.2 does. A response this
//! client sends then comes back as a response to its own frame of the same id
//! (client and server ids move in step), so the scenarios in which the client
//! answers the server's callbacks (ping, pick-hand, countdown) are skipped.
//! `--keyed-bulks` fixes the form of the bulks this peer sends to
//! `{"b": [...]}` (`RouterBuilder::bulk_form`), for a peer of that release,
//! which reads no other, before it has heard from it.
//!
//! `--session` (both modes) turns on sessions (`SessionOptions`): the client
//! resumes after every break, the server keeps each session's handlers and
//! their state (the `stats` count) across them, so `stats` stays exact and an
//! event delivered twice shows there. `--heartbeat-interval MS`,
//! `--heartbeat-timeout MS` and `--window MS` set those options.
//! `--token TOKEN` turns on authentication: `serve` requires this token
//! (`ServerBuilder::authenticate`; another, none, or a peer that does not
//! authenticate is refused), `connect` sends it (`ClientBuilder::credentials`).
//! Rejected, `connect` prints `AUTH REJECTED the server rejected the
//! authentication: REASON` and exits with code 3, running no scenario.
//! `--events N`, `--requests N` and `--big N` (connect) add the load scenarios
//! before `stats` (`tests/js/CONFORMANCE.md`).
//!
//! `serve` prints `LISTENING HOST:PORT` (the real port, also for port 0), then
//! serves every conformance event on every connection until interrupted
//! (Ctrl-C) or, with `--until-eof`, until its stdin ends; it then waits (up to
//! 10 s) for the open connections to close and prints its report line (below).
//! `connect` runs the scenarios against a server, prints `PASS name` or
//! `FAIL name: why` for each, then `N passed, M failed`, then its report line,
//! and exits non-zero if any failed. The scenarios and their names are the same
//! as the JavaScript peer's in `tests/js`.
//!
//! The report line counts what the peer saw go wrong, and the bulk messages it
//! received ([`Tally`]); the JavaScript peer prints the same line:
//!
//! ```text
//! REPORT protocol_errors=0 stray=0 duplicates=0 handler_failures=0 unhandled=0 bulks=N bulk_frames=M [unclosed=0]
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nmsg::Peer;

use nmsg::codec::{ArgVisitor, Builtin, BulkForm, Decoded, FrameSink};
use nmsg::frame::{Frame, FrameKind, OutFrame};
use nmsg::transport::Address;
use nmsg::{
    args, Args, Buffering, Callback, Client, ClientEvent, Codec, EncodeError, Error, FramingError,
    ProtocolError, RemoteCallback, Router, Server, ServerEvent, SessionOptions, Socket, Value,
};

const SCENARIO_TIMEOUT: Duration = Duration::from_secs(10);
/// A load scenario's timeout: it may run through many breaks.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// `serve`: how long the open connections may take to close at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

struct Options {
    serve: bool,
    addr: String,
    json: bool,
    buffered: bool,
    until_eof: bool,
    peer_echoes: bool,
    keyed_bulks: bool,
    /// `--session`, with the options given in ms.
    session: bool,
    heartbeat_interval: Option<u64>,
    heartbeat_timeout: Option<u64>,
    window: Option<u64>,
    /// `--token`: required (serve) or sent (connect).
    token: Option<String>,
    /// The load scenarios' sizes (0: not run).
    events: u64,
    requests: u64,
    big: u64,
    /// `--tls-cert`, `--tls-key` (serve).
    tls_cert: Option<String>,
    tls_key: Option<String>,
    /// `--tls-ca`, `--server-name` (connect).
    tls_ca: Option<String>,
    server_name: Option<String>,
}

impl Options {
    /// `--buffered`: bulks as soon as the writer is free; else one message a frame.
    fn buffering(&self) -> Buffering {
        if self.buffered {
            Buffering::Idle
        } else {
            Buffering::Off
        }
    }

    /// `--session`: the session options, from the defaults and the flags.
    fn session(&self) -> Option<SessionOptions> {
        if !self.session {
            return None;
        }
        let ms = Duration::from_millis;
        let mut options = SessionOptions::new();
        if let Some(t) = self.heartbeat_interval {
            options = options.heartbeat_interval(ms(t));
        }
        if let Some(t) = self.heartbeat_timeout {
            options = options.heartbeat_timeout(ms(t));
        }
        if let Some(t) = self.window {
            options = options.window(ms(t));
        }
        Some(options)
    }

    /// `--keyed-bulks`: bulks always `{"b": [...]}`; else the peer's form.
    fn router(&self, router: nmsg::RouterBuilder) -> nmsg::RouterBuilder {
        if self.keyed_bulks {
            router.bulk_form(BulkForm::Keyed)
        } else {
            router
        }
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: conformance serve|connect --addr HOST:PORT [--codec msgpack|json] [--buffered] [--until-eof] [--peer-echoes] [--keyed-bulks]\n       [--session [--heartbeat-interval MS] [--heartbeat-timeout MS] [--window MS]] [--token TOKEN]\n       [--tls-cert PEM --tls-key PEM] [--tls-ca PEM [--server-name NAME]] [--events N] [--requests N] [--big N]");
    std::process::exit(2);
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let serve = match args.next().as_deref() {
        Some("serve") => true,
        Some("connect") => false,
        other => usage(&format!("unknown mode {other:?}")),
    };
    let (mut addr, mut json, mut buffered, mut until_eof, mut peer_echoes, mut keyed_bulks) =
        (None, false, false, false, false, false);
    let mut session = false;
    let mut token = None;
    let (mut heartbeat_interval, mut heartbeat_timeout, mut window) = (None, None, None);
    let (mut events, mut requests, mut big) = (0, 0, 0);
    let number = |flag: &str, value: Option<String>| -> u64 {
        value
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage(&format!("{flag} needs a number, got {value:?}")))
    };
    let (mut tls_cert, mut tls_key, mut tls_ca, mut server_name) = (None, None, None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next(),
            "--codec" => match args.next().as_deref() {
                Some("msgpack") => json = false,
                Some("json") => json = true,
                other => usage(&format!("unknown codec {other:?}")),
            },
            "--buffered" => buffered = true,
            "--until-eof" => until_eof = true,
            "--peer-echoes" => peer_echoes = true,
            "--keyed-bulks" => keyed_bulks = true,
            "--session" => session = true,
            "--token" => {
                token = Some(
                    args.next()
                        .unwrap_or_else(|| usage("--token needs a value")),
                )
            }
            "--heartbeat-interval" => heartbeat_interval = Some(number(&arg, args.next())),
            "--heartbeat-timeout" => heartbeat_timeout = Some(number(&arg, args.next())),
            "--window" => window = Some(number(&arg, args.next())),
            "--events" => events = number(&arg, args.next()),
            "--requests" => requests = number(&arg, args.next()),
            "--big" => big = number(&arg, args.next()),
            "--tls-cert" => tls_cert = args.next(),
            "--tls-key" => tls_key = args.next(),
            "--tls-ca" => tls_ca = args.next(),
            "--server-name" => server_name = args.next(),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let addr = addr.unwrap_or_else(|| usage("--addr is required"));
    if tls_cert.is_some() != tls_key.is_some() {
        usage("--tls-cert and --tls-key go together");
    }
    if server_name.is_some() && tls_ca.is_none() {
        usage("--server-name needs --tls-ca");
    }
    Options {
        serve,
        addr,
        json,
        buffered,
        until_eof,
        peer_echoes,
        keyed_bulks,
        session,
        heartbeat_interval,
        heartbeat_timeout,
        window,
        token,
        events,
        requests,
        big,
        tls_cert,
        tls_key,
        tls_ca,
        server_name,
    }
}

/// `serve`'s server: over TLS with `--tls-cert` and `--tls-key`.
fn server(opts: &Options) -> Result<nmsg::ServerBuilder, std::io::Error> {
    use nmsg::transport::tls;
    Ok(match (&opts.tls_cert, &opts.tls_key) {
        (Some(cert), Some(key)) => {
            let config = tls::server_config(
                tls::load_certs(cert)?,
                tls::load_private_key(key)?,
                tls::ClientAuth::None,
            )?;
            Server::tls(&opts.addr, config)
        }
        _ => Server::tcp(&opts.addr),
    })
}

/// `connect`'s client: over TLS with `--tls-ca`.
fn client(opts: &Options) -> Result<nmsg::ClientBuilder, std::io::Error> {
    use nmsg::transport::tls;
    Ok(match &opts.tls_ca {
        Some(ca) => {
            let config = tls::client_config(tls::load_roots(ca)?, None)?;
            let name = opts.server_name.as_deref().unwrap_or("localhost");
            Client::tls(&opts.addr, name, config)
        }
        None => Client::tcp(&opts.addr),
    })
}

// ---------------------------------------------------------------------------
// the report
// ---------------------------------------------------------------------------

/// What this peer saw go wrong on its connections, and the bulk messages it
/// received, for the report line it prints at the end.
#[derive(Debug, Default)]
struct Tally {
    /// Framing errors, undecodable messages and malformed frames.
    protocol_errors: AtomicU64,
    /// Responses to a frame or position with no live callback, other than duplicates.
    stray: AtomicU64,
    /// Responses to a callback that an earlier response already answered.
    duplicates: AtomicU64,
    /// Handlers and callbacks that failed or panicked.
    handler_failures: AtomicU64,
    /// Events no handler serves.
    unhandled: AtomicU64,
    /// Bulk messages received.
    bulks: AtomicU64,
    /// Frames received inside bulk messages.
    bulk_frames: AtomicU64,
    responses: Mutex<Responses>,
    /// With `--session`: what became of the sessions ([`Tally::session_event`]).
    sessions: Sessions,
}

/// Sessions seen (client and server events), for the report's session fields.
#[derive(Debug, Default)]
struct Sessions {
    /// Sessions begun by a handshake that asked for none.
    new: AtomicU64,
    /// Handshakes that resumed a session.
    resumed: AtomicU64,
    /// Handshakes that asked to resume a session the server did not have.
    expired: AtomicU64,
    /// A client's sessions lost (its pending replies failed).
    lost: AtomicU64,
    /// Plain emits written again on a new session after a loss.
    resent: AtomicU64,
    /// Frames dropped at a loss.
    dropped_on_loss: AtomicU64,
    /// Connections that broke (the stream ended in the middle of a message,
    /// or failed): in a session, the break the session repairs, not a
    /// protocol error.
    breaks: AtomicU64,
    /// Whether this peer has sessions.
    on: std::sync::atomic::AtomicBool,
}

/// `(r, f)` of every response received, and of those received more than once.
/// Frame ids only grow (up to 10^9) on a connection; a server keeps one tally
/// for all its connections, so this tells duplicates apart only while a single
/// connection sends responses, as in the interop runs.
#[derive(Debug, Default)]
struct Responses {
    seen: HashSet<(u32, u32)>,
    repeated: HashSet<(u32, u32)>,
}

impl Tally {
    fn response_received(&self, to: u32, position: u32) {
        let mut responses = self.responses.lock().unwrap();
        if !responses.seen.insert((to, position)) {
            responses.repeated.insert((to, position));
        }
    }

    /// Counts an error the router reported.
    fn count(&self, error: &Error) {
        let counter = match error {
            Error::Framing(FramingError::Truncated | FramingError::Io(_))
                if self.sessions.on.load(Ordering::Relaxed) =>
            {
                &self.sessions.breaks
            }
            Error::Protocol(_) | Error::Framing(_) => &self.protocol_errors,
            Error::StrayResponse { frame, position } => {
                let responses = self.responses.lock().unwrap();
                if responses.repeated.contains(&(*frame, *position)) {
                    &self.duplicates
                } else {
                    &self.stray
                }
            }
            _ => &self.handler_failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a client's session event.
    fn client_event(&self, event: &ClientEvent) {
        let s = &self.sessions;
        match event {
            ClientEvent::SessionStarted { .. } => s.new.fetch_add(1, Ordering::Relaxed),
            ClientEvent::Resumed { .. } => s.resumed.fetch_add(1, Ordering::Relaxed),
            ClientEvent::SessionLost {
                resent, dropped, ..
            } => {
                s.expired.fetch_add(1, Ordering::Relaxed);
                s.resent.fetch_add(*resent as u64, Ordering::Relaxed);
                s.dropped_on_loss
                    .fetch_add(*dropped as u64, Ordering::Relaxed);
                s.lost.fetch_add(1, Ordering::Relaxed)
            }
            _ => 0,
        };
    }

    /// Counts a server's session event.
    fn server_event(&self, event: &ServerEvent) {
        let s = &self.sessions;
        match event {
            ServerEvent::SessionStarted { expired, .. } => {
                if *expired {
                    s.expired.fetch_add(1, Ordering::Relaxed)
                } else {
                    s.new.fetch_add(1, Ordering::Relaxed)
                }
            }
            ServerEvent::Resumed { .. } => s.resumed.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// `REPORT key=value ...`; `unclosed` is the server's count of connections
    /// still open when it stopped; with sessions, their fields follow.
    fn report(&self, unclosed: Option<usize>, sessions: bool) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut line = format!(
            "REPORT protocol_errors={} stray={} duplicates={} handler_failures={} unhandled={} bulks={} bulk_frames={}",
            n(&self.protocol_errors),
            n(&self.stray),
            n(&self.duplicates),
            n(&self.handler_failures),
            n(&self.unhandled),
            n(&self.bulks),
            n(&self.bulk_frames),
        );
        if let Some(unclosed) = unclosed {
            line.push_str(&format!(" unclosed={unclosed}"));
        }
        if sessions {
            let s = &self.sessions;
            line.push_str(&format!(
                " sessions_new={} sessions_resumed={} sessions_expired={} sessions_lost={} resent={} dropped_on_loss={} breaks={}",
                n(&s.new),
                n(&s.resumed),
                n(&s.expired),
                n(&s.lost),
                n(&s.resent),
                n(&s.dropped_on_loss),
                n(&s.breaks),
            ));
        }
        line
    }
}

/// The codec of the command line, which also tells the tally about every
/// message it decodes: bulks and the frames in them, and responses.
#[derive(Debug)]
struct Observed {
    inner: Box<dyn Codec>,
    tally: Arc<Tally>,
}

impl Observed {
    fn new(json: bool, tally: Arc<Tally>) -> Self {
        let inner: Box<dyn Codec> = if json {
            Box::new(nmsg::Json)
        } else {
            Box::new(nmsg::MsgPack)
        };
        Observed { inner, tally }
    }
}

impl Codec for Observed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn decode_message(
        &self,
        payload: &[u8],
        bulk: &mut FrameSink<'_>,
    ) -> Result<Decoded, ProtocolError> {
        let observe = |frame: &Result<Frame, ProtocolError>| {
            if let Ok(Frame {
                kind: FrameKind::Response { to, position },
                ..
            }) = frame
            {
                self.tally.response_received(*to, *position);
            }
        };
        let decoded = self.inner.decode_message(payload, &mut |frame| {
            observe(&frame);
            bulk(frame)
        })?;
        match &decoded {
            Decoded::Single(frame) => observe(frame),
            Decoded::Bulk(frames) | Decoded::KeyedBulk(frames) => {
                self.tally.bulks.fetch_add(1, Ordering::Relaxed);
                self.tally
                    .bulk_frames
                    .fetch_add(*frames as u64, Ordering::Relaxed);
            }
        }
        Ok(decoded)
    }

    fn deserialize_arg(&self, raw: &[u8], visit: &mut ArgVisitor<'_>) -> Result<(), String> {
        self.inner.deserialize_arg(raw, visit)
    }

    fn encode_frame(&self, frame: &OutFrame<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.inner.encode_frame(frame, out)
    }

    fn bulk_start(&self, count: usize, form: BulkForm, out: &mut Vec<u8>) {
        self.inner.bulk_start(count, form, out)
    }

    fn bulk_separator(&self) -> &'static [u8] {
        self.inner.bulk_separator()
    }

    fn bulk_end(&self, form: BulkForm, out: &mut Vec<u8>) {
        self.inner.bulk_end(form, out)
    }

    // Arguments are decoded as with the inner codec alone (its direct path,
    // not the general one through `deserialize_arg`).
    fn builtin(&self) -> Option<Builtin> {
        self.inner.builtin()
    }
}

#[tokio::main]
async fn main() {
    let opts = options();
    let code = if opts.serve {
        serve(opts).await
    } else {
        connect(opts).await
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------
// serve
// ---------------------------------------------------------------------------

async fn serve(opts: Options) -> i32 {
    let tally = Arc::new(Tally::default());
    tally.sessions.on.store(opts.session, Ordering::Relaxed);
    let builder = match server(&opts) {
        Ok(builder) => builder,
        Err(e) => {
            eprintln!("cannot set up TLS: {e}");
            return 2;
        }
    };
    let mut builder = builder
        .buffering(opts.buffering())
        .router(|r| opts.router(r))
        .codec(Observed::new(opts.json, tally.clone()));
    if let Some(session) = opts.session() {
        builder = builder.session(session);
    }
    if let Some(token) = opts.token.clone() {
        builder = builder.authenticate(move |request: nmsg::AuthRequest| {
            let verdict = match request.credentials.as_str() {
                Some(t) if t == token => Ok(None),
                Some(_) => Err(nmsg::Reject::new("wrong token")),
                None => Err(nmsg::Reject::new("the token must be a string")),
            };
            std::future::ready(verdict)
        });
    }
    let server = builder.start();
    let mut events = server.events();
    let observed = tally.clone();
    // With sessions, a socket whose client went away is kept for the window:
    // the end waits for connections, not sockets.
    let connected = Arc::new(Mutex::new(HashSet::new()));
    let tracked = connected.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    observed.server_event(&event);
                    if matches!(
                        event,
                        ServerEvent::Away { .. }
                            | ServerEvent::Resumed { .. }
                            | ServerEvent::SessionExpired { .. }
                            | ServerEvent::SessionStarted { expired: true, .. }
                            | ServerEvent::Lost { .. }
                            | ServerEvent::AuthRejected { .. }
                    ) {
                        eprintln!("conformance server: {event:?}");
                    }
                    let mut up = tracked.lock().unwrap();
                    match event {
                        ServerEvent::Connected { socket, .. }
                        | ServerEvent::Resumed { socket, .. } => {
                            up.insert(socket);
                        }
                        ServerEvent::Away { socket, .. }
                        | ServerEvent::Disconnected { socket, .. } => {
                            up.remove(&socket);
                        }
                        _ => {}
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("conformance server: {n} server events missed")
                }
                Err(_) => break,
            }
        }
    });
    let counted = tally.clone();
    server.on_socket(move |socket| install_handlers(socket, counted.clone()));
    match server.started().await {
        Ok(Address::Tcp(addr)) => println!("LISTENING {addr}"),
        other => {
            eprintln!("could not listen: {other:?}");
            return 1;
        }
    }
    if opts.until_eof {
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await;
    } else {
        let _ = tokio::signal::ctrl_c().await;
    }
    // What the clients sent before they closed is handled by the time their
    // connections close: wait for that, so that the report counts all of it.
    let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
    let mut unclosed = 0;
    if opts.session {
        while !connected.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        unclosed = connected.lock().unwrap().len();
    }
    for socket in server.sockets().into_iter().filter(|_| !opts.session) {
        if tokio::time::timeout_at(deadline, socket.closed())
            .await
            .is_err()
        {
            unclosed += 1;
        }
    }
    server.stop().await;
    println!("{}", tally.report(Some(unclosed), opts.session));
    0
}

/// The conformance events whose shapes a trait can state. `add` (integers or
/// floats, refused otherwise), `countdown` (whose callback gets either
/// `("done")` or `(n, next)`) and `stats` (per-connection state kept by the
/// wildcard) stay dynamic.
#[nmsg::events]
pub trait Conformance {
    /// `cb(value)`.
    fn echo(&self, value: Value) -> Value;
    /// `err(..)`, then `done("pong", inner)`; `inner(cb2)` calls `cb2(..)`.
    fn ping(&self, data: Value, err: Callback<(String,)>, done: Done);
    /// `cb(left, right)`; `left(c)` calls `c("white")`, `right(c)` calls `c("black")`.
    #[nmsg(event = "pick-hand")]
    fn pick_hand(&self, cb: Callback<(Hand, Hand)>);
    /// `cb2(value)`, then `cb0(value)`.
    fn multi(&self, cb0: Callback<(Value,)>, value: Value, cb2: Callback<(Value,)>);
    /// Emits `event(payload)` back on this connection, then `cb(true)`.
    fn notify(&self, event: String, payload: Value, cb: Callback<(bool,)>, peer: Peer);
    /// `cb(now, big, negative, max_safe)`: JavaScript numbers (with msgpack-lite
    /// float64 on the wire) taken as integers and sent back.
    fn integers(
        &self,
        now: u64,
        big: u64,
        negative: i64,
        max_safe: u64,
        cb: Callback<(u64, u64, i64, u64)>,
    );
    /// `cb(text)`, through a `String`.
    #[nmsg(event = "echo-text")]
    fn echo_text(&self, text: String) -> String;
}

/// A hand of `pick-hand`: called with a callback that gets the colour.
type Hand = Callback<(Callback<(String,)>,)>;

/// `ping`'s `done`: gets "pong" and `inner`, which is called with a callback for the last text.
type Done = Callback<(String, Callback<(Callback<(String,)>,)>)>;

struct Conformer;

impl Conformance for Conformer {
    fn echo(&self, value: Value) -> Value {
        value
    }

    fn ping(&self, _data: Value, err: Callback<(String,)>, done: Done) {
        let _ = err.call(("This is error message".to_owned(),));
        let inner = Callback::new(|(cb2,): (Callback<(String,)>,)| {
            let _ = cb2.call(("You can have as many levels as you want...".to_owned(),));
        });
        let _ = done.call(("pong".to_owned(), inner));
    }

    fn pick_hand(&self, cb: Callback<(Hand, Hand)>) {
        let hand = |colour: &'static str| -> Hand {
            Callback::new(move |(c,): (Callback<(String,)>,)| {
                let _ = c.call((colour.to_owned(),));
            })
        };
        let _ = cb.call((hand("white"), hand("black")));
    }

    fn multi(&self, cb0: Callback<(Value,)>, value: Value, cb2: Callback<(Value,)>) {
        let _ = cb2.call((value.clone(),));
        let _ = cb0.call((value,));
    }

    fn notify(&self, event: String, payload: Value, cb: Callback<(bool,)>, peer: Peer) {
        if peer.router().emit(&event, (payload,)).is_ok() {
            let _ = cb.call((true,));
        }
    }

    fn integers(
        &self,
        now: u64,
        big: u64,
        negative: i64,
        max_safe: u64,
        cb: Callback<(u64, u64, i64, u64)>,
    ) {
        let _ = cb.call((now, big, negative, max_safe));
    }

    fn echo_text(&self, text: String) -> String {
        text
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_i64().map(|i| i as f64))
        .or_else(|| v.as_u64().map(|u| u as f64))
}

/// Every conformance event, on one connection's router. They are registered
/// as that router's `on` handlers (not in the server's shared `Api`) because the
/// wildcard, which counts events for `stats`, runs only after `on` handlers.
fn install_handlers(socket: Socket, tally: Arc<Tally>) {
    let router = socket.router();
    install_sequences(router);
    router.on_error(move |e| {
        tally.count(&e);
        eprintln!("conformance server: {e}");
    });
    ConformanceApi::new(Conformer).serve(router);
    router.on("add", |args: Args| -> Result<(), Error> {
        let (a, b, cb): (Value, Value, RemoteCallback) = args.parse()?;
        match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) if x.checked_add(y).is_some() => cb.call((x + y,)),
            _ => match (as_f64(&a), as_f64(&b)) {
                (Some(x), Some(y)) => cb.call((x + y,)),
                _ => Err(Error::Argument {
                    index: 0,
                    reason: format!("add takes two numbers, got {a} and {b}"),
                }),
            },
        }
    });
    router.on("countdown", |args: Args| -> Result<(), Error> {
        let (n, cb): (u64, RemoteCallback) = args.parse()?;
        countdown(n, cb)
    });
    let stats = Arc::new(Mutex::new((0u64, Value::Nil)));
    let counted = stats.clone();
    router.on("*", move |args: Args| -> Result<(), Error> {
        let name: String = args.get(0)?;
        let mut s = counted.lock().unwrap();
        s.0 += 1;
        s.1 = Value::from(name);
        Ok(())
    });
    router.on("stats", move |args: Args| -> Result<(), Error> {
        let (cb,): (RemoteCallback,) = args.parse()?;
        let (events, last) = stats.lock().unwrap().clone();
        let map = Value::Map(vec![
            (Value::from("events"), Value::from(events)),
            (Value::from("last"), last),
        ]);
        cb.call((map,))
    });
}

/// Order and exactly-once each way (the session tests' load): `seq(k)` events
/// must come with k = 0, 1, 2, ...; `seq-check` answers how many came in
/// order and how many did not; `flood(n, cb)` emits n `seq` events to the
/// client, numbered on from the last flood, waiting for room in the queue,
/// then answers `cb(n)` (waiting for room too, with `call_wait`).
fn install_sequences(router: &Router) {
    #[derive(Default)]
    struct Seq {
        next: u64,
        errors: u64,
        sent: u64,
    }
    let seq = Arc::new(Mutex::new(Seq::default()));
    let counted = seq.clone();
    router.on("seq", move |args: Args| -> Result<(), Error> {
        let (k,): (u64,) = args.parse()?;
        let mut s = counted.lock().unwrap();
        if k == s.next {
            s.next += 1;
        } else {
            eprintln!("seq: expected {}, got {k}", s.next);
            s.errors += 1;
            s.next = k + 1;
        }
        Ok(())
    });
    let checked = seq.clone();
    router.on("seq-check", move |args: Args| -> Result<(), Error> {
        let (cb,): (RemoteCallback,) = args.parse()?;
        let (next, errors) = {
            let s = checked.lock().unwrap();
            (s.next, s.errors)
        };
        cb.call((next, errors))
    });
    let to_client = router.clone();
    router.on("flood", move |args: Args| -> Result<(), Error> {
        let (n, cb): (u64, RemoteCallback) = args.parse()?;
        let (router, seq) = (to_client.clone(), seq.clone());
        tokio::spawn(async move {
            for _ in 0..n {
                let k = {
                    let mut s = seq.lock().unwrap();
                    s.sent += 1;
                    s.sent - 1
                };
                if let Err(e) = router.emit_wait("seq", (k,)).await {
                    eprintln!("flood: emit seq({k}) failed: {e}");
                    return;
                }
            }
            // The queue may be full right after the last seq event (a
            // connection away, a slow reader): wait for room, as for the events.
            if let Err(e) = cb.call_wait((n,)).await {
                eprintln!("flood: the callback failed: {e}");
            }
        });
        Ok(())
    });
}

fn countdown(n: u64, cb: RemoteCallback) -> Result<(), Error> {
    if n == 0 {
        return cb.call(("done",));
    }
    let next = Callback::new(move |(cb2,): (RemoteCallback,)| {
        let _ = countdown(n - 1, cb2);
    });
    cb.call((n, next))
}

// ---------------------------------------------------------------------------
// connect
// ---------------------------------------------------------------------------

type Outcome = Result<(), String>;

async fn connect(opts: Options) -> i32 {
    let tally = Arc::new(Tally::default());
    tally.sessions.on.store(opts.session, Ordering::Relaxed);
    let builder = match client(&opts) {
        Ok(builder) => builder,
        Err(e) => {
            eprintln!("cannot set up TLS: {e}");
            return 2;
        }
    };
    let mut builder = builder
        .buffering(opts.buffering())
        .router(|r| opts.router(r))
        .codec(Observed::new(opts.json, tally.clone()));
    if let Some(session) = opts.session() {
        builder = builder.session(session);
    }
    if let Some(token) = opts.token.clone() {
        builder = builder.credentials(move || token.clone());
    }
    let client = builder.start();
    let mut events = client.events();
    // Read if the connection does not come: the last attempt's error.
    let mut attempts = client.events();
    let observed = tally.clone();
    // With a token: the first of served (connected, or a session welcomed)
    // and rejected.
    let (admitted, mut admission) = tokio::sync::mpsc::unbounded_channel();
    let session = opts.session;
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    match &event {
                        ClientEvent::AuthRejected { reason } => {
                            let _ = admitted.send(Err(reason.clone()));
                        }
                        ClientEvent::Connected { .. } if !session => {
                            let _ = admitted.send(Ok(()));
                        }
                        ClientEvent::SessionStarted { .. } => {
                            let _ = admitted.send(Ok(()));
                        }
                        _ => {}
                    }
                    observed.client_event(&event);
                    if matches!(
                        event,
                        ClientEvent::Disconnected { .. }
                            | ClientEvent::Resumed { .. }
                            | ClientEvent::SessionLost { .. }
                            | ClientEvent::Lost { .. }
                            | ClientEvent::Reconnecting { .. }
                    ) {
                        eprintln!("conformance client: {event:?}");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("conformance client: {n} client events missed")
                }
                Err(_) => break,
            }
        }
    });
    let router = client.router().clone();
    let counted = tally.clone();
    router.on_error(move |e| {
        counted.count(&e);
        eprintln!("conformance client: {e}");
    });
    if opts.token.is_some() {
        match tokio::time::timeout(SCENARIO_TIMEOUT, admission.recv()).await {
            Ok(Some(Err(reason))) => {
                println!("AUTH REJECTED {}", Error::AuthRejected { reason });
                client.stop().await;
                return 3;
            }
            Ok(Some(Ok(()))) => {}
            _ => eprintln!("could not connect to {}", opts.addr),
        }
    } else if tokio::time::timeout(SCENARIO_TIMEOUT, client.connected())
        .await
        .is_err()
    {
        // The last attempt's error (a TLS handshake's says which check failed).
        let mut why = String::from("no attempt finished");
        while let Ok(event) = attempts.try_recv() {
            if let nmsg::ClientEvent::Reconnecting { error, .. } = event {
                why = error;
            }
        }
        eprintln!("could not connect to {}: {why}", opts.addr);
    }

    let mut results: Vec<(String, Outcome)> = Vec::new();
    macro_rules! scenario {
        ($name:expr, $body:expr) => {
            scenario!($name, $body, SCENARIO_TIMEOUT)
        };
        ($name:expr, $body:expr, $timeout:expr) => {{
            let outcome = run_for($timeout, $body).await;
            match &outcome {
                Ok(()) => println!("PASS {}", $name),
                Err(why) => println!("FAIL {}: {}", $name, why),
            }
            results.push(($name.to_string(), outcome));
        }};
    }
    let r = &router;
    scenario!("echo-string", echo_same(r, Value::from("hello")));
    scenario!(
        "echo-unicode",
        echo_same(r, Value::from("héllo wörld ✓ 日本語 🚀"))
    );
    scenario!("echo-nested-map", echo_same(r, nested_map()));
    // Taken back as integers: a JavaScript peer writing with msgpack-lite
    // answers with float64s.
    scenario!("echo-big-int", async move {
        echo_u64(r, 1_099_511_627_776).await?;
        echo_i64(r, -5_000_000_000).await
    });
    scenario!("echo-float", async move {
        echo_same(r, Value::from(3.5f64)).await?;
        echo_same(r, Value::from(-0.125f64)).await
    });
    scenario!("js-numbers", js_numbers(r));
    scenario!("non-bmp", async move {
        let s = "a\u{1F30D}";
        echo_same(r, Value::from(s)).await?;
        let (back,): (String,) = r
            .request("echo-text", (s,))
            .await
            .map_err(|e| e.to_string())?;
        expect(back == s, format!("echo-text({s:?}) gave {back:?}"))
    });
    if !opts.json {
        scenario!(
            "echo-binary",
            echo_same(r, Value::Binary((0..=255u8).collect()))
        );
    }
    scenario!("echo-1mib", echo_same(r, Value::from("x".repeat(1 << 20))));
    scenario!("add", async move {
        let (sum,): (f64,) = r
            .request("add", args![2, 40])
            .await
            .map_err(|e| e.to_string())?;
        expect(sum == 42.0, format!("add(2, 40) gave {sum}"))?;
        let (sum,): (f64,) = r
            .request("add", args![1.5, 2.25])
            .await
            .map_err(|e| e.to_string())?;
        expect(sum == 3.75, format!("add(1.5, 2.25) gave {sum}"))
    });
    if opts.peer_echoes {
        eprintln!(
            "skipping ping, pick-hand, countdown: the server echoes (--peer-echoes), so the \
             responses this client sends come back as responses to its own frames of the same ids"
        );
    } else {
        scenario!("ping", ping(r));
        scenario!("pick-hand", pick_hand(r));
        scenario!("countdown", countdown_scenario(r, 50));
    }
    scenario!("multi", multi(r));
    scenario!("notify", notify(r));
    scenario!("inflight-2000", inflight(r, 2000));
    scenario!("unknown-event", async move {
        r.emit("no-such-event", args![1, Callback::new(|_: Args| {})])
            .map_err(|e| e.to_string())?;
        echo_same(r, Value::from("after")).await
    });
    // Events this client emitted before `stats` (callback invocations are not
    // events): one per echo, two each for echo-big-int, echo-float, add,
    // non-bmp and unknown-event, five for js-numbers, one for each other
    // scenario, and 2,000 in inflight-2000.
    let mut emitted_so_far =
        2000 + if opts.json { 24 } else { 25 } - if opts.peer_echoes { 3 } else { 0 };
    // The last of them is the echo of unknown-event.
    let mut last_so_far = "echo";
    // The load scenarios (`--events`, `--requests`, `--big`), as the
    // JavaScript peer's, before `stats`.
    if opts.events > 0 {
        let n = opts.events;
        scenario!(format!("events-out-{n}"), events_out(r, n), LOAD_TIMEOUT);
        scenario!(format!("events-in-{n}"), events_in(r, n), LOAD_TIMEOUT);
        emitted_so_far += n + 2; // the seq events, seq-check, flood
        last_so_far = "flood";
    }
    if opts.requests > 0 {
        let n = opts.requests;
        scenario!(format!("nested-{n}"), nested(r, n), LOAD_TIMEOUT);
        emitted_so_far += n;
        last_so_far = "countdown";
    }
    if opts.big > 0 {
        let n = opts.big;
        scenario!(format!("big-{n}"), big(r, n), LOAD_TIMEOUT);
        emitted_so_far += n;
        last_so_far = "echo";
    }
    scenario!("stats", async move {
        let (stats,): (Value,) = r.request("stats", ()).await.map_err(|e| e.to_string())?;
        let got = (stats["events"].as_u64(), stats["last"].as_str());
        // The server's wildcard has seen every event emitted before `stats`,
        // the last of them last; or, if it runs before the handler, those and
        // `stats` itself. Nothing else is right.
        expect(
            got == (Some(emitted_so_far), Some(last_so_far))
                || got == (Some(emitted_so_far + 1), Some("stats")),
            format!(
                "got {stats}, expected {{events: {emitted_so_far}, last: {last_so_far:?}}} \
                 (or {{events: {}, last: \"stats\"}})",
                emitted_so_far + 1
            ),
        )
    });

    let failed = results.iter().filter(|(_, o)| o.is_err()).count();
    println!("{} passed, {} failed", results.len() - failed, failed);
    // A last round trip: a response the server sent twice, before this one's
    // answer, has arrived (and been counted) once it is answered.
    let last = run(echo_same(r, Value::from("last"))).await;
    if let Err(why) = &last {
        eprintln!("the last round trip failed: {why}");
    }
    client.stop().await;
    // Events with no handler are ignored by the router, and counted there.
    tally
        .unhandled
        .fetch_add(router.unhandled_events(), Ordering::Relaxed);
    println!("{}", tally.report(None, opts.session));
    if failed > 0 || last.is_err() {
        1
    } else {
        0
    }
}

async fn run(body: impl Future<Output = Outcome>) -> Outcome {
    run_for(SCENARIO_TIMEOUT, body).await
}

async fn run_for(timeout: Duration, body: impl Future<Output = Outcome>) -> Outcome {
    match tokio::time::timeout(timeout, body).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// `seq(0)` ... `seq(n - 1)`, waiting for room in the queue; then the server
/// must have seen them all, in order.
async fn events_out(r: &Router, n: u64) -> Outcome {
    for k in 0..n {
        r.emit_wait("seq", (k,))
            .await
            .map_err(|e| format!("emit seq({k}): {e}"))?;
    }
    let (next, errors): (u64, u64) = r
        .request("seq-check", ())
        .await
        .map_err(|e| format!("seq-check: {e}"))?;
    expect(
        (next, errors) == (n, 0),
        format!("seq-check gave ({next}, {errors}), expected ({n}, 0) (in order, out of order)"),
    )
}

/// `flood(n)`: the server's `seq` events must come 0 ... n - 1, in order,
/// all before the callback.
async fn events_in(r: &Router, n: u64) -> Outcome {
    let got = Arc::new(Mutex::new((0u64, 0u64)));
    let seen = got.clone();
    r.on("seq", move |args: Args| -> Result<(), Error> {
        let (k,): (u64,) = args.parse()?;
        let mut g = seen.lock().unwrap();
        if k == g.0 {
            g.0 += 1;
        } else {
            eprintln!("seq from the server: expected {}, got {k}", g.0);
            g.1 += 1;
            g.0 = k + 1;
        }
        Ok(())
    });
    let answer: Result<(u64,), Error> = r.request("flood", (n,)).await;
    r.off("seq");
    let (m,) = answer.map_err(|e| format!("flood({n}): {e}"))?;
    expect(m == n, format!("flood({n}) answered {m}"))?;
    let (next, errors) = *got.lock().unwrap();
    expect(
        (next, errors) == (n, 0),
        format!("seq events from the server: ({next}, {errors}), expected ({n}, 0) (in order, out of order)"),
    )
}

/// `n` requests of `countdown(1)`, 200 at a time: callbacks three deep.
async fn nested(r: &Router, n: u64) -> Outcome {
    use futures_util::stream::{self, StreamExt};
    let mut answered = 0;
    let mut calls = stream::iter(0..n)
        .map(|k| async move {
            countdown_scenario(r, 1)
                .await
                .map_err(|e| format!("request {k}: {e}"))
        })
        .buffer_unordered(200);
    while let Some(outcome) = calls.next().await {
        outcome?;
        answered += 1;
    }
    expect(
        answered == n,
        format!("{answered} of {n} requests answered"),
    )
}

/// `n` echoes of distinct 1 MiB strings, one at a time.
async fn big(r: &Router, n: u64) -> Outcome {
    for k in 0..n {
        let prefix = format!("{k}:");
        let fill = char::from(b'a' + (k % 26) as u8);
        let s: String = prefix.clone()
            + &std::iter::repeat_n(fill, (1 << 20) - prefix.len()).collect::<String>();
        echo_same(r, Value::from(s))
            .await
            .map_err(|e| format!("echo(1 MiB #{k}): {e}"))?;
    }
    Ok(())
}

fn expect(ok: bool, why: String) -> Outcome {
    if ok {
        Ok(())
    } else {
        Err(why)
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!(
            "{}… ({} chars)",
            &s[..s.char_indices().nth(60).map_or(s.len(), |(i, _)| i)],
            s.len()
        )
    } else {
        s
    }
}

async fn echo_same(r: &Router, value: Value) -> Outcome {
    let (back,): (Value,) = r
        .request("echo", args![&value])
        .await
        .map_err(|e| e.to_string())?;
    expect(
        back == value,
        format!("sent {}, got {}", short(&value), short(&back)),
    )
}

async fn echo_u64(r: &Router, value: u64) -> Outcome {
    let (back,): (u64,) = r
        .request("echo", (value,))
        .await
        .map_err(|e| format!("echo({value}): {e}"))?;
    expect(back == value, format!("sent {value}, got {back}"))
}

async fn echo_i64(r: &Router, value: i64) -> Outcome {
    let (back,): (i64,) = r
        .request("echo", (value,))
        .await
        .map_err(|e| format!("echo({value}): {e}"))?;
    expect(back == value, format!("sent {value}, got {back}"))
}

/// What JavaScript programs send (`Date.now()`, 2^40, -5e9, 2^53 - 1), each way
/// exactly: echoed, and through the typed `integers`.
async fn js_numbers(r: &Router) -> Outcome {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis() as u64;
    let (big, negative, max_safe) = (1u64 << 40, -5_000_000_000i64, (1u64 << 53) - 1);
    echo_u64(r, now).await?;
    echo_u64(r, big).await?;
    echo_i64(r, negative).await?;
    echo_u64(r, max_safe).await?;
    let sent = (now, big, negative, max_safe);
    let got: (u64, u64, i64, u64) = r
        .request("integers", sent)
        .await
        .map_err(|e| format!("integers{sent:?}: {e}"))?;
    expect(got == sent, format!("integers{sent:?} gave {got:?}"))
}

fn nested_map() -> Value {
    nmsg::to_value(&serde_json::json!({
        "name": "nmsg",
        "list": [1, "two", {"three": [3]}],
        "nested": {"deep": {"deeper": true}},
        "none": null
    }))
    .expect("a JSON value converts")
}

async fn ping(r: &Router) -> Outcome {
    type Inner = Callback<(Callback<(String,)>,)>;
    // err must run before done: record the order in which they run.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Option<Inner>)>();
    let tx2 = tx.clone();
    let err = Callback::new(move |(message,): (String,)| {
        let _ = tx.send((format!("err({message})"), None));
    });
    let done = Callback::new(move |(pong, inner): (String, Inner)| {
        let _ = tx2.send((format!("done({pong})"), Some(inner)));
    });
    let data = nmsg::to_value(&serde_json::json!({"key": "value"})).unwrap();
    r.emit("ping", args![data, err, done])
        .map_err(|e| e.to_string())?;
    let (first, _) = rx.recv().await.ok_or("err was never called")?;
    expect(
        first == "err(This is error message)",
        format!("first call was {first}"),
    )?;
    let (second, inner) = rx.recv().await.ok_or("done was never called")?;
    expect(second == "done(pong)", format!("second call was {second}"))?;
    let (cb2, deepest) = Callback::<(String,)>::once();
    inner
        .expect("done carries inner")
        .call((cb2,))
        .map_err(|e| e.to_string())?;
    let (text,) = deepest.await.map_err(|e| format!("cb2: {e}"))?;
    expect(
        text == "You can have as many levels as you want...",
        format!("cb2 got {text:?}"),
    )
}

async fn pick_hand(r: &Router) -> Outcome {
    type Hand = Callback<(Callback<(String,)>,)>;
    let (left, right): (Hand, Hand) = r
        .request("pick-hand", ())
        .await
        .map_err(|e| e.to_string())?;
    let (c, white) = Callback::<(String,)>::once();
    left.call((c,)).map_err(|e| e.to_string())?;
    let (c, black) = Callback::<(String,)>::once();
    right.call((c,)).map_err(|e| e.to_string())?;
    let (white,) = white.await.map_err(|e| e.to_string())?;
    let (black,) = black.await.map_err(|e| e.to_string())?;
    expect(
        white == "white" && black == "black",
        format!("left gave {white:?}, right gave {black:?}"),
    )
}

async fn countdown_scenario(r: &Router, from: u64) -> Outcome {
    let (first, mut reply) = Callback::<Args>::once();
    r.emit("countdown", args![from, first])
        .map_err(|e| e.to_string())?;
    for want in (1..=from).rev() {
        let args = reply.await.map_err(|e| format!("level {want}: {e}"))?;
        let n: u64 = args.get(0).map_err(|e| format!("level {want}: {e}"))?;
        expect(n == want, format!("expected {want}, got {n}"))?;
        let next = args.callback(1).map_err(|e| format!("level {want}: {e}"))?;
        let (cb, r2) = Callback::<Args>::once();
        next.call((cb,)).map_err(|e| e.to_string())?;
        reply = r2;
    }
    let last = reply.await.map_err(|e| e.to_string())?;
    let done: String = last.get(0).map_err(|e| e.to_string())?;
    expect(done == "done", format!("the last level gave {done:?}"))
}

async fn multi(r: &Router) -> Outcome {
    // The order is recorded when each callback runs (in arrival order), not
    // when a future is polled.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(&'static str, String)>();
    let tx2 = tx.clone();
    let cb0 = Callback::new(move |(v,): (String,)| {
        let _ = tx.send(("cb0", v));
    });
    let cb2 = Callback::new(move |(v,): (String,)| {
        let _ = tx2.send(("cb2", v));
    });
    r.emit("multi", args![cb0, "v", cb2])
        .map_err(|e| e.to_string())?;
    let mut rx = rx;
    let mut calls = Vec::new();
    while calls.len() < 2 {
        calls.push(
            rx.recv()
                .await
                .ok_or("a callback was dropped without being called")?,
        );
    }
    let want = [("cb2", "v".to_owned()), ("cb0", "v".to_owned())];
    expect(
        calls == want,
        format!("callbacks ran as {calls:?}, expected cb2(\"v\") then cb0(\"v\")"),
    )
}

async fn notify(r: &Router) -> Outcome {
    let payload = nmsg::to_value(&serde_json::json!({"hello": "from server"})).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Mutex::new(Some(tx));
    r.on("notified", move |args: Args| {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(args.value(0));
        }
    });
    let (ok,): (bool,) = r
        .request("notify", args!["notified", &payload])
        .await
        .map_err(|e| e.to_string())?;
    expect(ok, "notify answered false".into())?;
    let got = rx
        .await
        .map_err(|_| "the notified event never came".to_string())?
        .map_err(|e| e.to_string())?;
    r.off("notified");
    expect(
        got == payload,
        format!("notified with {got}, expected {payload}"),
    )
}

async fn inflight(r: &Router, n: u64) -> Outcome {
    let calls: Vec<_> = (0..n)
        .map(|i| r.request::<(u64,)>("echo", args![i]))
        .collect();
    let answers = futures_util::future::join_all(calls).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let (v,) = answer.map_err(|e| format!("call {i}: {e}"))?;
        expect(v == i as u64, format!("call {i} answered {v}"))?;
    }
    Ok(())
}

#[allow(dead_code)]
fn _assert_socket_is_send(s: Socket) -> impl Send {
    s
}
