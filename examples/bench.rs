//! nmsg side by side with raw TCP (the limit) and tarpc (the peer), in one process,
//! over loopback TCP.
//!
//! ```text
//! cargo run --release --example bench -- [--quick] [--json] [--scenario NAME,..] [--impl NAME,..]
//!                                          [--split-runtimes] [--dispatch-burst N] [--session] [--tls]
//! ```
//!
//! Implementations:
//!
//! - `raw-tcp`: tokio, 4-byte length-prefixed echo, no serialization;
//! - `nmsg`: dynamic `request`/`emit_wait`, answered by the server's `on` handler (MsgPack, defaults);
//! - `nmsg-typed`: the same calls through an `#[nmsg::events]` trait;
//! - `tarpc`: the same service with tarpc 0.37 (bincode, TCP_NODELAY as the others);
//! - `nmsg-tls`: `nmsg` over TLS (`Server::tls`, `Client::tls`: rustls with
//!   aws-lc-rs, TLS 1.3, a certificate made at the start with rcgen). Not run
//!   by default: `--tls` adds it, and without `--scenario` runs `seq`,
//!   `inflight64` and `fire` only, so that TLS stands beside plain nmsg in one run.
//!
//! Scenarios (40-byte payloads unless noted):
//!
//! - `seq`: one call at a time;
//! - `inflight64`: 64 calls outstanding on one connection;
//! - `fire`: events without an answer, counted by the server (raw-tcp streams frames);
//! - `echo4k`, `echo256k`: one call at a time with 4 KiB and 256 KiB payloads;
//! - `idle10k`: 10,000 idle connections to one server, resident memory per
//!   connection (client and server side together). Both sides live in this process
//!   when the open-file limit allows (the soft limit is raised as far as it may be);
//!   otherwise the clients run in a child process (this binary with
//!   `--idle-clients`) and its growth is added. `BENCH_VERBOSE=1` prints the sides apart.
//!
//! Each throughput figure is the median of the timed windows of several rounds;
//! a round runs every implementation in turn, each on a fresh server and
//! connection, with a warm-up (so where the scheduler happens to place one
//! connection's tasks does not decide an implementation's figure).
//! `--json` prints one line per measurement on stdout (the table goes to stderr).
//! BENCHMARKS.md has the results, the method and what limits each figure.
//!
//! By default client and server share one tokio runtime with a worker thread per
//! CPU, as the goals are measured. Two options measure other setups (the table
//! says which was used):
//!
//! - `--split-runtimes`: the servers run on a runtime of their own with one
//!   worker thread, the clients and the load on another with one, as two
//!   processes on two CPUs would (each end then waits for input in its own
//!   `epoll`); `idle10k` runs on the clients' runtime;
//! - `--dispatch-burst N`: nmsg's clients and servers are built with
//!   `ServerBuilder::dispatch_burst(N)` and `ClientBuilder::dispatch_burst(N)`
//!   instead of the default;
//! - `--session`: nmsg's clients and servers (dynamic and typed) are built
//!   with sessions (`.session(SessionOptions::default())`), to set their
//!   cost against the same build without them (the idle clients of
//!   `idle10k`'s child process stay plain).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_bytes::ByteBuf;

// ----- options, scenarios, implementations -----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Seq,
    Inflight64,
    Fire,
    Echo4k,
    Echo256k,
    Idle10k,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::Seq,
        Scenario::Inflight64,
        Scenario::Fire,
        Scenario::Echo4k,
        Scenario::Echo256k,
        Scenario::Idle10k,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Seq => "seq",
            Scenario::Inflight64 => "inflight64",
            Scenario::Fire => "fire",
            Scenario::Echo4k => "echo4k",
            Scenario::Echo256k => "echo256k",
            Scenario::Idle10k => "idle10k",
        }
    }

    fn payload(self) -> usize {
        match self {
            Scenario::Echo4k => 4 * 1024,
            Scenario::Echo256k => 256 * 1024,
            _ => 40,
        }
    }

    /// Calls outstanding at once on the one connection.
    fn depth(self) -> usize {
        match self {
            Scenario::Inflight64 => 64,
            _ => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Raw,
    Nmsg,
    Typed,
    Tarpc,
    NmsgTls,
}

impl Impl {
    /// The default implementations.
    const ALL: [Impl; 4] = [Impl::Raw, Impl::Nmsg, Impl::Typed, Impl::Tarpc];
    /// Every implementation, in the table's order.
    const EVERY: [Impl; 5] = [
        Impl::Raw,
        Impl::Nmsg,
        Impl::NmsgTls,
        Impl::Typed,
        Impl::Tarpc,
    ];

    fn name(self) -> &'static str {
        match self {
            Impl::Raw => "raw-tcp",
            Impl::Nmsg => "nmsg",
            Impl::Typed => "nmsg-typed",
            Impl::Tarpc => "tarpc",
            Impl::NmsgTls => "nmsg-tls",
        }
    }
}

#[derive(Debug, Clone)]
struct Config {
    quick: bool,
    json: bool,
    scenarios: Vec<Scenario>,
    impls: Vec<Impl>,
    warmup: Duration,
    window: Duration,
    /// Windows per round.
    windows: usize,
    /// Rounds of each throughput scenario.
    rounds: usize,
    idle_conns: usize,
    idle_rounds: usize,
    /// Whether the idle clients can live in this process (the open-file limit
    /// allows both sides of every connection), or need a child process.
    idle_same_process: bool,
    /// `--split-runtimes`: servers and clients on runtimes of their own.
    split_runtimes: bool,
    /// `--dispatch-burst N`, for nmsg's connections.
    dispatch_burst: Option<usize>,
    /// `--session`: nmsg's clients and servers with sessions.
    session: bool,
}

impl Config {
    fn from_args() -> Result<Config, String> {
        let mut quick = false;
        let mut json = false;
        let mut scenarios: Vec<Scenario> = Scenario::ALL.to_vec();
        let mut impls: Vec<Impl> = Impl::ALL.to_vec();
        let mut split_runtimes = false;
        let mut dispatch_burst = None;
        let mut session = false;
        let (mut tls, mut scenarios_given) = (false, false);
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--json" => json = true,
                "--scenario" => {
                    let list = args.next().ok_or("--scenario needs a list")?;
                    scenarios_given = true;
                    scenarios = list
                        .split(',')
                        .map(|n| {
                            Scenario::ALL
                                .into_iter()
                                .find(|s| s.name() == n)
                                .ok_or_else(|| format!("unknown scenario {n:?}"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--impl" => {
                    let list = args.next().ok_or("--impl needs a list")?;
                    impls = list
                        .split(',')
                        .map(|n| {
                            Impl::EVERY
                                .into_iter()
                                .find(|i| i.name() == n)
                                .ok_or_else(|| format!("unknown implementation {n:?}"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--split-runtimes" => split_runtimes = true,
                "--session" => session = true,
                "--tls" => tls = true,
                "--dispatch-burst" => {
                    let n = args.next().ok_or("--dispatch-burst needs a number")?;
                    dispatch_burst = Some(
                        n.parse::<usize>()
                            .ok()
                            .filter(|&n| n > 0)
                            .ok_or_else(|| format!("--dispatch-burst: bad count {n:?}"))?,
                    );
                }
                "-h" | "--help" => {
                    return Err("usage: bench [--quick] [--json] [--scenario seq,inflight64,fire,echo4k,echo256k,idle10k] [--impl raw-tcp,nmsg,nmsg-typed,tarpc] [--split-runtimes] [--dispatch-burst N] [--session] [--tls]".into())
                }
                other => return Err(format!("unknown option {other:?} (try --help)")),
            }
        }
        if tls {
            if !impls.contains(&Impl::NmsgTls) {
                impls.push(Impl::NmsgTls);
            }
            if !scenarios_given {
                scenarios = vec![Scenario::Seq, Scenario::Inflight64, Scenario::Fire];
            }
        }
        let (warmup, window, windows, rounds, idle_rounds) = if quick {
            (
                Duration::from_millis(300),
                Duration::from_millis(300),
                3,
                2,
                1,
            )
        } else {
            (
                Duration::from_millis(1000),
                Duration::from_millis(1000),
                3,
                3,
                3,
            )
        };
        Ok(Config {
            quick,
            json,
            scenarios,
            impls,
            warmup,
            window,
            windows,
            rounds,
            idle_conns: 10_000,
            idle_rounds,
            idle_same_process: true,
            split_runtimes,
            dispatch_burst,
            session,
        })
    }
}

/// One figure: the median of its windows, with their spread.
#[derive(Debug, Clone)]
struct Figure {
    scenario: Scenario,
    imp: Impl,
    median: f64,
    min: f64,
    max: f64,
}

// ----- measuring -----

/// Counts completed operations; the load runs in spawned tasks until `stop`.
#[derive(Clone, Default)]
struct Load {
    ops: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Load {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    fn done(&self, n: u64) {
        self.ops.fetch_add(n, Ordering::Relaxed);
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Warms up, then samples `ops` over `windows` windows; gives the rates per second.
async fn sample(cfg: &Config, ops: &AtomicU64) -> Vec<f64> {
    tokio::time::sleep(cfg.warmup).await;
    let mut rates = Vec::with_capacity(cfg.windows);
    let mut last = ops.load(Ordering::Relaxed);
    let mut at = Instant::now();
    for _ in 0..cfg.windows {
        tokio::time::sleep(cfg.window).await;
        let now = Instant::now();
        let count = ops.load(Ordering::Relaxed);
        rates.push((count - last) as f64 / (now - at).as_secs_f64());
        last = count;
        at = now;
    }
    rates
}

/// Runs `call` one at a time (depth 1) or with `depth` calls outstanding, until
/// the load stops; counts each completion in `counted` (when the caller counts).
async fn drive<F, Fut>(load: Load, depth: usize, count: bool, mut call: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    if depth == 1 {
        while load.running() {
            call().await?;
            if count {
                load.done(1);
            }
        }
        return Ok(());
    }
    let mut outstanding = FuturesUnordered::new();
    for _ in 0..depth {
        outstanding.push(call());
    }
    while let Some(result) = outstanding.next().await {
        result?;
        if count {
            load.done(1);
        }
        if load.running() {
            outstanding.push(call());
        }
    }
    Ok(())
}

/// Measures a load: `start` spawns it (its tasks count into `load.ops`), then
/// windows are sampled and the load is stopped.
async fn measure_load(
    cfg: &Config,
    load: &Load,
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
) -> Result<Vec<f64>, String> {
    let rates = sample(cfg, &load.ops).await;
    load.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(e)) => return Err(format!("load task failed: {e}")),
            Err(_) => return Err("load did not stop within 10 s".into()),
        }
    }
    Ok(rates)
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

// ----- resident memory -----

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Gives freed heap pages back to the kernel, so that the next RSS delta counts
/// new memory rather than reuse of what an earlier scenario left behind.
fn trim_heap() {
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raises the soft (and, as root, the hard) open-file limit to at least `want`.
/// Says what it did.
fn raise_nofile(want: u64) -> String {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return "getrlimit failed; open-file limit unknown".into();
        }
        let (cur, max) = (lim.rlim_cur, lim.rlim_max);
        if cur >= want {
            return format!("open-file limit {cur} (enough)");
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return format!("open-file limit raised from {cur} (hard {max}) to {want}");
        }
        let capped = libc::rlimit {
            rlim_cur: max,
            rlim_max: max,
        };
        if cur < max && libc::setrlimit(libc::RLIMIT_NOFILE, &capped) == 0 {
            return format!(
                "open-file limit raised from {cur} to the hard limit {max} (wanted {want})"
            );
        }
        if cur == max {
            return format!(
                "open-file limit {cur} is the hard limit, which this process may not raise (wanted {want})"
            );
        }
        format!("open-file limit {cur}, could not raise it to {want}")
    }
}

/// The open-file limit now in force (the soft one).
fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    lim.rlim_cur
}

/// Idle client connections of one implementation, held open until closed.
enum Clients {
    Raw(Vec<tokio::net::TcpStream>),
    Nmsg(Vec<nmsg::Client>),
    Tarpc(Vec<rpc::BenchClient>),
}

impl Clients {
    /// Opens `n` connections to `addr`, 500 at a time; after each batch `gate`
    /// waits until the server has accepted them all. A listener's backlog that
    /// overflowed would lose idle connections for good: with SYN cookies the
    /// client counts itself connected, and, sending nothing, never retries.
    async fn open<G, GFut>(
        imp: Impl,
        addr: SocketAddr,
        n: usize,
        gate: G,
    ) -> Result<Clients, String>
    where
        G: Fn(usize) -> GFut,
        GFut: Future<Output = Result<(), String>>,
    {
        const BATCH: usize = 100;
        let mut clients = match imp {
            Impl::Raw => Clients::Raw(Vec::with_capacity(n)),
            Impl::Nmsg | Impl::Typed | Impl::NmsgTls => Clients::Nmsg(Vec::with_capacity(n)),
            Impl::Tarpc => Clients::Tarpc(Vec::with_capacity(n)),
        };
        let mut opened = 0;
        while opened < n {
            let batch = BATCH.min(n - opened);
            match &mut clients {
                Clients::Raw(v) => {
                    for s in
                        futures_util::future::join_all((0..batch).map(|_| raw::connect(addr))).await
                    {
                        v.push(s?);
                    }
                }
                Clients::Nmsg(v) => {
                    v.extend(
                        futures_util::future::join_all((0..batch).map(|_| dynamic::client(addr)))
                            .await,
                    );
                }
                Clients::Tarpc(v) => {
                    for c in
                        futures_util::future::join_all((0..batch).map(|_| rpc::client(addr))).await
                    {
                        v.push(c?);
                    }
                }
            }
            opened += batch;
            gate(opened).await?;
        }
        Ok(clients)
    }

    async fn close(self) {
        match self {
            Clients::Raw(v) => drop(v),
            Clients::Nmsg(v) => {
                for chunk in v.chunks(500) {
                    futures_util::future::join_all(chunk.iter().map(|c| c.stop())).await;
                }
            }
            Clients::Tarpc(v) => drop(v),
        }
    }
}

/// The server side of an idle round.
enum IdleServer {
    Raw(tokio::task::JoinHandle<()>, Arc<AtomicU64>),
    Nmsg(nmsg::Server),
    Tarpc(tokio::task::JoinHandle<()>, Arc<AtomicU64>),
}

impl IdleServer {
    async fn start(imp: Impl) -> Result<(IdleServer, SocketAddr), String> {
        let accepted = Arc::new(AtomicU64::new(0));
        Ok(match imp {
            Impl::Raw => {
                let (addr, task) =
                    raw::server(raw::Mode::Echo, Arc::default(), accepted.clone()).await;
                (IdleServer::Raw(task, accepted), addr)
            }
            Impl::Nmsg | Impl::Typed | Impl::NmsgTls => {
                let (server, addr) = dynamic::server(Arc::default()).await?;
                (IdleServer::Nmsg(server), addr)
            }
            Impl::Tarpc => {
                let (addr, task) = rpc::server(Arc::default(), accepted.clone()).await;
                (IdleServer::Tarpc(task, accepted), addr)
            }
        })
    }

    /// Connections the server has taken.
    fn seen(&self) -> usize {
        match self {
            IdleServer::Raw(_, n) | IdleServer::Tarpc(_, n) => n.load(Ordering::Relaxed) as usize,
            IdleServer::Nmsg(server) => server.socket_count(),
        }
    }

    async fn wait_for(&self, n: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.seen() < n {
            if Instant::now() > deadline {
                return Err(format!("the server saw {} of {n} connections", self.seen()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn stop(self) {
        match self {
            // Connection tasks end when their clients close.
            IdleServer::Raw(task, _) | IdleServer::Tarpc(task, _) => task.abort(),
            IdleServer::Nmsg(server) => server.stop().await,
        }
    }
}

/// The resident memory delta of opening `n` idle connections of `imp` in this
/// process, in bytes, and the clients (to close after the server side is measured).
async fn open_and_measure<G, GFut>(
    imp: Impl,
    addr: SocketAddr,
    n: usize,
    gate: G,
) -> Result<(u64, Clients), String>
where
    G: Fn(usize) -> GFut,
    GFut: Future<Output = Result<(), String>>,
{
    trim_heap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes();
    let clients = Clients::open(imp, addr, n, gate).await?;
    // Let every connection task reach its idle state.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok((rss_bytes().saturating_sub(before), clients))
}

/// One idle round: the resident memory per connection, client and server side
/// together. With `same_process`, the clients are opened here (the delta of this
/// process); otherwise in a child process (`--idle-clients`), whose own delta
/// is added to the server's: each side then needs only `n` file descriptors.
async fn idle_round(imp: Impl, n: usize, same_process: bool) -> Result<f64, String> {
    let (server, addr) = IdleServer::start(imp).await?;
    let result = if same_process {
        let server = &server;
        match open_and_measure(imp, addr, n, |k| server.wait_for(k)).await {
            Ok((delta, clients)) => {
                clients.close().await;
                Ok(delta as f64 / n as f64)
            }
            Err(e) => Err(e),
        }
    } else {
        idle_round_child(imp, addr, n, &server).await
    };
    server.stop().await;
    // Closed connections' tasks and sockets wind down before the next round.
    tokio::time::sleep(Duration::from_millis(500)).await;
    result
}

async fn idle_round_child(
    imp: Impl,
    addr: SocketAddr,
    n: usize,
    server: &IdleServer,
) -> Result<f64, String> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    trim_heap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(exe)
        .args([
            "--idle-clients",
            imp.name(),
            &addr.to_string(),
            &n.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the client process: {e}"))?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut stdin = child.stdin.take().expect("piped");
    // The child says `opened K` after each batch and waits for a line back,
    // which it gets once the server has accepted K; then `rss_delta BYTES`.
    let client_delta: u64 = loop {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .map_err(|_| "the client process did not report within 120 s".to_string())?
            .map_err(|e| e.to_string())?
            .ok_or("the client process ended without a report")?;
        if let Some(k) = line.strip_prefix("opened ") {
            let k: usize = k
                .trim()
                .parse()
                .map_err(|_| format!("bad report {line:?}"))?;
            server.wait_for(k).await?;
            use tokio::io::AsyncWriteExt;
            stdin.write_all(b"go\n").await.map_err(|e| e.to_string())?;
            continue;
        }
        match line.strip_prefix("rss_delta ") {
            Some(v) => {
                break v
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad report {line:?}"))?
            }
            None => return Err(format!("client process: {line}")),
        }
    };
    server.wait_for(n).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server_delta = rss_bytes().saturating_sub(before);
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!(
            "  {}: server side {} B, client side {} B per connection",
            imp.name(),
            server_delta / n as u64,
            client_delta / n as u64
        );
    } // Closing its stdin tells the child to exit, which closes every connection.
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    Ok((server_delta + client_delta) as f64 / n as f64)
}

/// The child process of a two-process idle round: opens the clients, reports
/// its resident memory delta on stdout, holds them until stdin closes.
fn idle_clients_main(args: &[String]) -> ! {
    let fail = |e: String| -> ! {
        println!("error {e}");
        std::process::exit(1)
    };
    let [imp, addr, n] = args else {
        fail("usage: --idle-clients IMPL ADDR N".into())
    };
    let imp = Impl::EVERY
        .into_iter()
        .find(|i| i.name() == imp)
        .unwrap_or_else(|| fail(format!("unknown implementation {imp:?}")));
    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|_| fail(format!("bad address {addr:?}")));
    let n: usize = n
        .parse()
        .unwrap_or_else(|_| fail(format!("bad count {n:?}")));
    let _ = raise_nofile(n as u64 + 1024);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let gate = |k: usize| async move {
        use std::io::{BufRead, Write};
        println!("opened {k}");
        let _ = std::io::stdout().flush();
        // Blocks this (the runtime's block_on) thread only; the connections'
        // tasks run on the worker threads.
        let mut line = String::new();
        match std::io::stdin().lock().read_line(&mut line) {
            Ok(n) if n > 0 => Ok(()),
            _ => Err("the parent went away".to_string()),
        }
    };
    let _clients = rt.block_on(async {
        match open_and_measure(imp, addr, n, gate).await {
            Ok((delta, clients)) => {
                println!("rss_delta {delta}");
                clients
            }
            Err(e) => fail(e),
        }
    });
    use std::io::{Read, Write};
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    std::process::exit(0)
}

// ----- raw TCP: the limit -----

mod raw {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[derive(Clone, Copy)]
    pub(super) enum Mode {
        Echo,
        Count,
    }

    /// The server: a task per connection that echoes each frame back (or counts
    /// it). `accepted` counts the connections it took.
    pub(super) async fn server(
        mode: Mode,
        count: Arc<AtomicU64>,
        accepted: Arc<AtomicU64>,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            loop {
                let Some(stream) = accept(&listener).await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(stream, mode, count.clone()));
            }
        });
        (addr, task)
    }

    /// Accepts one stream with TCP_NODELAY; on an error (such as running out of
    /// file descriptors) waits a little and says `None`.
    pub(super) async fn accept(listener: &TcpListener) -> Option<TcpStream> {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                Some(stream)
            }
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                None
            }
        }
    }

    /// Reads whatever has arrived, answers every complete frame in one write.
    /// Buffers are allocated on the first bytes, so an idle connection holds
    /// the task and the socket only.
    async fn serve(stream: TcpStream, mode: Mode, count: Arc<AtomicU64>) -> std::io::Result<()> {
        let mut stream = stream;
        let mut input: Vec<u8> = Vec::new();
        let mut output: Vec<u8> = Vec::new();
        let mut want = 64 * 1024;
        loop {
            stream.readable().await?;
            if input.capacity() - input.len() < want {
                input.reserve(want);
            }
            match stream.try_read_buf(&mut input) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // readable() reports a fresh socket ready once: give the
                    // buffer back, so an idle connection holds none.
                    if input.is_empty() {
                        input = Vec::new();
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
            let mut at = 0;
            let mut frames = 0;
            while input.len() - at >= 4 {
                let len = u32::from_be_bytes(input[at..at + 4].try_into().unwrap()) as usize;
                if input.len() - at < 4 + len {
                    want = (4 + len).max(64 * 1024);
                    break;
                }
                if let Mode::Echo = mode {
                    output.extend_from_slice(&input[at..at + 4 + len]);
                }
                frames += 1;
                at += 4 + len;
            }
            input.drain(..at);
            if let Mode::Count = mode {
                count.fetch_add(frames, Ordering::Relaxed);
            }
            if !output.is_empty() {
                stream.write_all(&output).await?;
                output.clear();
            }
        }
    }

    pub(super) async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(stream)
    }

    fn frame(data: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(4 + data.len());
        f.extend_from_slice(&(data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    /// `depth` requests outstanding on one stream, from one task: each batch of
    /// replies that arrives is answered with as many new requests, in one write.
    pub(super) async fn echo_load(
        addr: SocketAddr,
        size: usize,
        depth: usize,
        load: Load,
    ) -> Result<(), String> {
        let mut stream = connect(addr).await?;
        let one = frame(&payload(size));
        let err = |e: std::io::Error| e.to_string();
        if depth == 1 {
            let mut reply = vec![0u8; one.len()];
            stream.write_all(&one).await.map_err(err)?;
            stream.read_exact(&mut reply).await.map_err(err)?;
            if reply != one {
                return Err("raw-tcp: wrong echo".into());
            }
            while load.running() {
                stream.write_all(&one).await.map_err(err)?;
                stream.read_exact(&mut reply).await.map_err(err)?;
                load.done(1);
            }
            return Ok(());
        }
        let mut batch = Vec::with_capacity(one.len() * depth);
        for _ in 0..depth {
            batch.extend_from_slice(&one);
        }
        stream.write_all(&batch).await.map_err(err)?;
        let mut outstanding = depth;
        let mut input: Vec<u8> = Vec::with_capacity(64 * 1024);
        while outstanding > 0 {
            if input.capacity() - input.len() < 16 * 1024 {
                input.reserve(64 * 1024);
            }
            if stream.read_buf(&mut input).await.map_err(err)? == 0 {
                return Err("raw-tcp: server closed".into());
            }
            let whole = input.len() / one.len();
            input.drain(..whole * one.len());
            outstanding -= whole;
            load.done(whole as u64);
            if load.running() && whole > 0 {
                stream
                    .write_all(&batch[..whole * one.len()])
                    .await
                    .map_err(err)?;
                outstanding += whole;
            }
        }
        Ok(())
    }

    /// Streams frames, 64 KiB per write, as a buffered writer would.
    pub(super) async fn fire_load(addr: SocketAddr, load: Load) -> Result<(), String> {
        let mut stream = connect(addr).await?;
        let one = frame(&payload(40));
        let mut batch = Vec::new();
        while batch.len() + one.len() <= 64 * 1024 {
            batch.extend_from_slice(&one);
        }
        while load.running() {
            stream.write_all(&batch).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

// ----- nmsg, dynamic -----

/// `--dispatch-burst N`, for nmsg's routers.
static NMSG_DISPATCH_BURST: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// `--session`: nmsg's clients and servers with sessions.
static NMSG_SESSION: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// An nmsg server builder: the defaults, or `--dispatch-burst`, `--session`.
fn nmsg_server() -> nmsg::ServerBuilder {
    dispatch_burst(nmsg::Server::tcp("127.0.0.1:0"))
}

/// `--dispatch-burst` and `--session`, on any server builder.
fn dispatch_burst(mut server: nmsg::ServerBuilder) -> nmsg::ServerBuilder {
    if NMSG_SESSION.get().is_some() {
        server = server.session(nmsg::SessionOptions::default());
    }
    match NMSG_DISPATCH_BURST.get() {
        Some(&n) => server.dispatch_burst(n),
        None => server,
    }
}

/// An nmsg client builder: the defaults, or `--dispatch-burst`, `--session`.
fn nmsg_client(addr: SocketAddr) -> nmsg::ClientBuilder {
    client_dispatch_burst(nmsg::Client::tcp(addr.to_string()))
}

/// `--dispatch-burst` and `--session`, on any client builder.
fn client_dispatch_burst(mut client: nmsg::ClientBuilder) -> nmsg::ClientBuilder {
    if NMSG_SESSION.get().is_some() {
        client = client.session(nmsg::SessionOptions::default());
    }
    match NMSG_DISPATCH_BURST.get() {
        Some(&n) => client.dispatch_burst(n),
        None => client,
    }
}

/// `nmsg-tls`: the server's and the client's TLS configurations, with a CA
/// and a certificate for `localhost` it signed, made once with rcgen.
fn tls_configs() -> &'static (
    nmsg::transport::tls::ServerConfig,
    nmsg::transport::tls::ClientConfig,
) {
    use nmsg::transport::tls;
    static CONFIGS: std::sync::OnceLock<(tls::ServerConfig, tls::ClientConfig)> =
        std::sync::OnceLock::new();
    CONFIGS.get_or_init(|| {
        let ca_key = rcgen::KeyPair::generate().expect("a key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("a CA certificate");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .and_then(|params| params.signed_by(&key, &issuer))
            .expect("a certificate");
        let mut roots = tls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).expect("a root");
        let key = tls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let server = tls::server_config(vec![cert.der().clone()], key, tls::ClientAuth::None)
            .expect("a server configuration");
        let client = tls::client_config(roots, None).expect("a client configuration");
        (server, client)
    })
}

/// An nmsg server builder over TLS (`nmsg-tls`).
fn nmsg_tls_server() -> nmsg::ServerBuilder {
    dispatch_burst(nmsg::Server::tls("127.0.0.1:0", tls_configs().0.clone()))
}

/// An nmsg client builder over TLS (`nmsg-tls`).
fn nmsg_tls_client(addr: SocketAddr) -> nmsg::ClientBuilder {
    let config = tls_configs().1.clone();
    client_dispatch_burst(nmsg::Client::tls(addr.to_string(), "localhost", config))
}

mod dynamic {
    use super::*;
    use nmsg::{args, Args, Client, Error, RemoteCallback, Server, Value};

    /// A server with `echo(value, cb)` answering `cb(value)` and `fire(value)` counted.
    pub(super) async fn server(count: Arc<AtomicU64>) -> Result<(Server, SocketAddr), String> {
        serve(nmsg_server(), count).await
    }

    /// The same server over TLS (`nmsg-tls`).
    pub(super) async fn tls_server(count: Arc<AtomicU64>) -> Result<(Server, SocketAddr), String> {
        serve(nmsg_tls_server(), count).await
    }

    async fn serve(
        server: nmsg::ServerBuilder,
        count: Arc<AtomicU64>,
    ) -> Result<(Server, SocketAddr), String> {
        let server = server.start();
        server.on("echo", |args: Args| -> Result<(), Error> {
            let (v, cb): (Value, RemoteCallback) = args.parse()?;
            cb.call((v,))
        });
        server.on("fire", move |_args: Args| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        match server.started().await {
            Ok(nmsg::transport::Address::Tcp(addr)) => Ok((server, addr)),
            other => Err(format!("nmsg server did not start: {other:?}")),
        }
    }

    pub(super) async fn client(addr: SocketAddr) -> Client {
        let client = nmsg_client(addr).start();
        client.connected().await;
        client
    }

    /// A client over TLS (`nmsg-tls`).
    pub(super) async fn tls_client(addr: SocketAddr) -> Client {
        let client = nmsg_tls_client(addr).start();
        client.connected().await;
        client
    }

    pub(super) async fn check_echo(client: &Client, data: &ByteBuf) -> Result<(), String> {
        let (back,): (ByteBuf,) = client
            .router()
            .request("echo", args![data.clone()])
            .await
            .map_err(|e| e.to_string())?;
        if back != *data {
            return Err("nmsg: wrong echo".into());
        }
        Ok(())
    }
}

// ----- nmsg, typed -----
//
// The `#[nmsg::events]` typed layer. The trait below lowers to the same frames as
// the dynamic calls above: `echo(x)` is `{e: "echo", a: [x], c: [1]}` answered by
// `cb(x)`, `fire(x)` is `{e: "fire", a: [x]}`.

mod typed {
    use super::*;
    use nmsg::{Client, Server};

    /// The benchmark's service.
    #[nmsg::events]
    pub trait Bench {
        /// Sends the payload back.
        fn echo(&self, data: ByteBuf) -> ByteBuf;
        /// Counted by the server, not answered.
        fn fire(&self, data: ByteBuf);
    }

    struct Handler(Arc<AtomicU64>);

    impl Bench for Handler {
        fn echo(&self, data: ByteBuf) -> ByteBuf {
            data
        }

        fn fire(&self, _data: ByteBuf) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) async fn server(count: Arc<AtomicU64>) -> Result<(Server, SocketAddr), String> {
        let server = nmsg_server().start();
        BenchApi::new(Handler(count)).register(server.api());
        match server.started().await {
            Ok(nmsg::transport::Address::Tcp(addr)) => Ok((server, addr)),
            other => Err(format!("nmsg server did not start: {other:?}")),
        }
    }

    pub(super) fn bench(client: &Client) -> BenchClient {
        BenchClient::new(client.router())
    }
}

// ----- tarpc -----

mod rpc {
    use super::*;
    use tarpc::server::Channel;
    use tarpc::tokio_serde::formats::Bincode;
    use tokio::net::TcpListener;

    #[tarpc::service]
    pub(super) trait Bench {
        async fn echo(data: ByteBuf) -> ByteBuf;
        async fn fire(data: ByteBuf);
    }

    #[derive(Clone)]
    struct Handler(Arc<AtomicU64>);

    impl Bench for Handler {
        async fn echo(self, _: tarpc::context::Context, data: ByteBuf) -> ByteBuf {
            data
        }

        async fn fire(self, _: tarpc::context::Context, _data: ByteBuf) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A server as tarpc's README runs one: a channel per connection, a task per
    /// request. `accepted` counts the connections it took.
    pub(super) async fn server(
        count: Arc<AtomicU64>,
        accepted: Arc<AtomicU64>,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let handler = Handler(count);
        let task =
            tokio::spawn(async move {
                loop {
                    let Some(stream) = raw::accept(&listener).await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let transport =
                        tarpc::serde_transport::Transport::from((stream, Bincode::default()));
                    let channel = tarpc::server::BaseChannel::with_defaults(transport);
                    let handler = handler.clone();
                    tokio::spawn(channel.execute(handler.serve()).for_each(
                        |response| async move {
                            tokio::spawn(response);
                        },
                    ));
                }
            });
        (addr, task)
    }

    pub(super) async fn client(addr: SocketAddr) -> Result<BenchClient, String> {
        let stream = raw::connect(addr).await?;
        let transport = tarpc::serde_transport::Transport::from((stream, Bincode::default()));
        Ok(BenchClient::new(tarpc::client::Config::default(), transport).spawn())
    }
}

// ----- running one figure -----

/// `--split-runtimes`: the servers' runtime.
static SERVER_RUNTIME: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();

/// Runs `start` (which starts a server) on the servers' runtime when there is
/// one, so the server's tasks are spawned there; otherwise here.
async fn on_server_runtime<F>(start: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match SERVER_RUNTIME.get() {
        Some(runtime) => runtime
            .spawn(start)
            .await
            .expect("a server start does not panic"),
        None => start.await,
    }
}

async fn run(cfg: &Config, scenario: Scenario, imp: Impl) -> Result<Vec<f64>, String> {
    if scenario == Scenario::Idle10k {
        return run_idle(cfg, imp).await;
    }
    let load = Load::default();
    let size = scenario.payload();
    let depth = scenario.depth();
    let data = ByteBuf::from(payload(size));
    match imp {
        Impl::Raw => {
            let mode = if scenario == Scenario::Fire {
                raw::Mode::Count
            } else {
                raw::Mode::Echo
            };
            let (addr, server) =
                on_server_runtime(raw::server(mode, load.ops.clone(), Arc::default())).await;
            let l = load.clone();
            let task = if scenario == Scenario::Fire {
                tokio::spawn(raw::fire_load(addr, l))
            } else {
                tokio::spawn(raw::echo_load(addr, size, depth, l))
            };
            let rates = measure_load(cfg, &load, vec![task]).await;
            server.abort();
            rates
        }
        Impl::Nmsg | Impl::NmsgTls => {
            let (server, client) = if imp == Impl::NmsgTls {
                let (server, addr) =
                    on_server_runtime(dynamic::tls_server(load.ops.clone())).await?;
                (server, dynamic::tls_client(addr).await)
            } else {
                let (server, addr) = on_server_runtime(dynamic::server(load.ops.clone())).await?;
                (server, dynamic::client(addr).await)
            };
            dynamic::check_echo(&client, &data).await?;
            let router = client.router().clone();
            let l = load.clone();
            let task = if scenario == Scenario::Fire {
                tokio::spawn(drive(l, 1, false, move || {
                    let sent = router.emit_wait("fire", nmsg::args![data.clone()]);
                    async move { sent.await.map_err(|e| e.to_string()) }
                }))
            } else {
                tokio::spawn(drive(l, depth, true, move || {
                    let reply = router.request::<(ByteBuf,)>("echo", nmsg::args![data.clone()]);
                    async move { reply.await.map(|_| ()).map_err(|e| e.to_string()) }
                }))
            };
            let rates = measure_load(cfg, &load, vec![task]).await;
            client.stop().await;
            server.stop().await;
            rates
        }
        Impl::Typed => {
            let (server, addr) = on_server_runtime(typed::server(load.ops.clone())).await?;
            let client = dynamic::client(addr).await;
            let bench = typed::bench(&client);
            if bench.echo(data.clone()).await.map_err(|e| e.to_string())? != data {
                return Err("nmsg-typed: wrong echo".into());
            }
            let l = load.clone();
            let task = if scenario == Scenario::Fire {
                // The typed emitter of an event without a reply fails on a full
                // queue rather than waiting; wait for room the dynamic way then.
                let router = client.router().clone();
                tokio::spawn(drive(l, 1, false, move || {
                    let sent = bench.fire(data.clone());
                    let router = router.clone();
                    let data = data.clone();
                    async move {
                        match sent {
                            Err(nmsg::Error::QueueFull { .. }) => router
                                .emit_wait("fire", nmsg::args![data])
                                .await
                                .map_err(|e| e.to_string()),
                            other => other.map_err(|e| e.to_string()),
                        }
                    }
                }))
            } else {
                tokio::spawn(drive(l, depth, true, move || {
                    let reply = bench.echo(data.clone());
                    async move { reply.await.map(|_| ()).map_err(|e| e.to_string()) }
                }))
            };
            let rates = measure_load(cfg, &load, vec![task]).await;
            client.stop().await;
            server.stop().await;
            rates
        }
        Impl::Tarpc => {
            let (addr, server) =
                on_server_runtime(rpc::server(load.ops.clone(), Arc::default())).await;
            let client = rpc::client(addr).await?;
            let back = client
                .echo(tarpc::context::current(), data.clone())
                .await
                .map_err(|e| e.to_string())?;
            if back != data {
                return Err("tarpc: wrong echo".into());
            }
            let l = load.clone();
            let task = if scenario == Scenario::Fire {
                // tarpc has no one-way call: a call without a result, with 256 outstanding.
                tokio::spawn(drive(l, 256, false, move || {
                    let client = client.clone();
                    let data = data.clone();
                    async move {
                        client
                            .fire(tarpc::context::current(), data)
                            .await
                            .map_err(|e| e.to_string())
                    }
                }))
            } else {
                tokio::spawn(drive(l, depth, true, move || {
                    let client = client.clone();
                    let data = data.clone();
                    async move {
                        client
                            .echo(tarpc::context::current(), data)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                }))
            };
            let rates = measure_load(cfg, &load, vec![task]).await;
            server.abort();
            rates
        }
    }
}

async fn run_idle(cfg: &Config, imp: Impl) -> Result<Vec<f64>, String> {
    let mut figures = Vec::new();
    for _ in 0..cfg.idle_rounds {
        figures.push(idle_round(imp, cfg.idle_conns, cfg.idle_same_process).await?);
    }
    Ok(figures)
}

// ----- output -----

fn fmt_rate(v: f64) -> String {
    let digits = (v.round() as u64).to_string();
    // Groups of three from the right: the first group takes what is left over.
    let first = match digits.len() % 3 {
        0 => 3.min(digits.len()),
        n => n,
    };
    let mut out = digits[..first].to_string();
    for group in digits.as_bytes()[first..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    out
}

fn find(figures: &[Figure], scenario: Scenario, imp: Impl) -> Option<f64> {
    figures
        .iter()
        .find(|f| f.scenario == scenario && f.imp == imp)
        .map(|f| f.median)
}

fn table(figures: &[Figure]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | impl | ops/s (idle10k: bytes/conn) | spread | vs raw-tcp | vs tarpc |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|");
    for f in figures {
        let ratio = |other: Option<f64>| match other {
            Some(o) if o > 0.0 => format!("{:.2}", f.median / o),
            _ => "-".into(),
        };
        let spread = if f.median > 0.0 {
            format!("±{:.0}%", (f.max - f.min) / 2.0 / f.median * 100.0)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            f.scenario.name(),
            f.imp.name(),
            fmt_rate(f.median),
            spread,
            ratio(find(figures, f.scenario, Impl::Raw)),
            ratio(find(figures, f.scenario, Impl::Tarpc)),
        );
    }
    out
}

fn goals(figures: &[Figure]) -> String {
    use std::fmt::Write;
    use Impl::*;
    use Scenario::*;
    // (label, scenario, numerator, denominator, goal, higher is better)
    let rows: [(&str, Scenario, Impl, Impl, f64, bool); 7] = [
        ("seq: nmsg / raw-tcp", Seq, Nmsg, Raw, 0.8, true),
        ("seq: nmsg / tarpc", Seq, Nmsg, Tarpc, 1.4, true),
        ("seq: nmsg-typed / nmsg", Seq, Typed, Nmsg, 0.9, true),
        (
            "inflight64: nmsg / tarpc",
            Inflight64,
            Nmsg,
            Tarpc,
            4.0,
            true,
        ),
        (
            "inflight64: nmsg / raw-tcp",
            Inflight64,
            Nmsg,
            Raw,
            0.5,
            true,
        ),
        ("fire: nmsg / raw-tcp", Fire, Nmsg, Raw, 0.2, true),
        (
            "idle10k: nmsg / raw-tcp bytes per connection",
            Idle10k,
            Nmsg,
            Raw,
            2.0,
            false,
        ),
    ];
    let mut out = String::new();
    let _ = writeln!(out, "| ratio | goal | measured | |");
    let _ = writeln!(out, "|---|---|---:|---|");
    for (label, s, a, b, goal, higher) in rows {
        let (Some(x), Some(y)) = (find(figures, s, a), find(figures, s, b)) else {
            continue;
        };
        let r = x / y;
        let met = if higher { r >= goal } else { r <= goal };
        let op = if higher { "≥" } else { "≤" };
        let _ = writeln!(
            out,
            "| {label} | {op} {goal} | {r:.2} | {} |",
            if met { "met" } else { "MISSED" }
        );
    }
    out
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--idle-clients") {
        idle_clients_main(&argv[2..]);
    }
    let mut cfg = match Config::from_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if cfg.scenarios.contains(&Scenario::Idle10k) {
        // Both sides of every connection in this process: two sockets each.
        let want = 2 * cfg.idle_conns as u64 + 1024;
        eprintln!("{}", raise_nofile(want));
        cfg.idle_same_process = nofile_limit() >= want;
        if !cfg.idle_same_process {
            eprintln!(
                "idle10k: the open-file limit ({}) cannot hold both sides of {} connections; \
                 the clients run in a child process and its memory delta is added to the server's",
                nofile_limit(),
                cfg.idle_conns
            );
        }
    }
    if let Some(n) = cfg.dispatch_burst {
        let _ = NMSG_DISPATCH_BURST.set(n);
    }
    if cfg.session {
        let _ = NMSG_SESSION.set(());
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // Kept alive until the end of main.
    let mut _servers_runtime = None;
    if cfg.split_runtimes {
        runtime.worker_threads(1);
        let servers = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-servers")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let _ = SERVER_RUNTIME.set(servers.handle().clone());
        _servers_runtime = Some(servers);
    }
    let rt = runtime.enable_all().build().expect("tokio runtime");
    let started = Instant::now();
    let figures = rt.block_on(async {
        let mut figures = Vec::new();
        // idle10k first: its memory deltas are cleanest on a heap that has not
        // yet been through the throughput runs.
        let mut order = cfg.scenarios.clone();
        order.sort_by_key(|s| (*s != Scenario::Idle10k) as u8);
        for &scenario in &order {
            let impls: Vec<Impl> = cfg
                .impls
                .iter()
                .copied()
                // The typed layer adds nothing per connection: same client, same server.
                .filter(|&imp| !(scenario == Scenario::Idle10k && imp == Impl::Typed))
                // TLS is measured for throughput only.
                .filter(|&imp| !(scenario == Scenario::Idle10k && imp == Impl::NmsgTls))
                .collect();
            // idle10k has rounds of its own (run_idle).
            let rounds = if scenario == Scenario::Idle10k {
                1
            } else {
                cfg.rounds
            };
            let mut samples: Vec<(Impl, Option<Vec<f64>>, f64)> = impls
                .iter()
                .map(|&imp| (imp, Some(Vec::new()), 0.0))
                .collect();
            for _ in 0..rounds {
                for (imp, rates, secs) in &mut samples {
                    let Some(all) = rates else { continue };
                    let t = Instant::now();
                    match run(&cfg, scenario, *imp).await {
                        Ok(r) => all.extend(r),
                        Err(e) => {
                            eprintln!("{:<10} {:<10} FAILED: {e}", scenario.name(), imp.name());
                            *rates = None;
                        }
                    }
                    *secs += t.elapsed().as_secs_f64();
                }
            }
            for (imp, rates, secs) in samples {
                let Some(mut rates) = rates else { continue };
                let (min, max) = rates
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(a, b), &r| (a.min(r), b.max(r)));
                let m = median(&mut rates);
                let unit = if scenario == Scenario::Idle10k {
                    "bytes_per_conn"
                } else {
                    "ops_per_sec"
                };
                if cfg.json {
                    println!(
                        "{{\"scenario\": \"{}\", \"impl\": \"{}\", \"{unit}\": {:.1}}}",
                        scenario.name(),
                        imp.name(),
                        m
                    );
                }
                eprintln!(
                    "{:<10} {:<10} {:>12} {unit}  ({:.1} s)",
                    scenario.name(),
                    imp.name(),
                    fmt_rate(m),
                    secs
                );
                figures.push(Figure {
                    scenario,
                    imp,
                    median: m,
                    min,
                    max,
                });
            }
        }
        figures
    });
    // Present in the scenarios' order.
    let mut figures = figures;
    figures.sort_by_key(|f| {
        (
            Scenario::ALL.iter().position(|s| *s == f.scenario),
            Impl::EVERY.iter().position(|i| *i == f.imp),
        )
    });
    let setup = if cfg.split_runtimes {
        "--split-runtimes: servers and clients on runtimes of their own, one worker thread each"
            .to_string()
    } else {
        format!(
            "client and server on one runtime, {} worker threads",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        )
    };
    let mut burst = match cfg.dispatch_burst {
        Some(n) => format!(", nmsg --dispatch-burst {n}"),
        None => String::new(),
    };
    if cfg.session {
        burst.push_str(", nmsg --session");
    }
    let caveat = if cfg.split_runtimes || cfg.dispatch_burst.is_some() || cfg.session {
        "\n(the goals are set for the default setup: one runtime, nmsg's defaults)"
    } else {
        ""
    };
    let report = format!(
        "\n{}\n{}\n(total {:.0} s{}, {setup}{burst}){caveat}",
        table(&figures),
        goals(&figures),
        started.elapsed().as_secs_f64(),
        if cfg.quick { ", --quick" } else { "" },
    );
    if cfg.json {
        eprintln!("{report}");
    } else {
        println!("{report}");
    }
}
