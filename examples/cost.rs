//! What one call or one event costs nmsg: heap allocations, and time, with the
//! client and the server in this process over loopback TCP.
//!
//! ```text
//! cargo run --release --example cost -- [inflight|fire] [COUNT] [--threads N] [--session]
//! ```
//!
//! - `inflight` (the default): `request("echo", [40 bytes])` with 64 calls
//!   outstanding on one connection, answered by the server's `on("echo")`
//!   handler, as the benchmark's `inflight64`;
//! - `fire`: `emit_wait("fire", [40 bytes])`, counted by the server, as `fire`.
//!
//! It runs 20,000 operations to warm up, then COUNT (default 300,000), and
//! prints the time and the allocations per operation, over both ends. With the
//! default `--threads 0` everything runs on the calling thread (a current-thread
//! runtime), so the time is CPU per operation and the run is deterministic
//! enough for `valgrind --tool=callgrind`: the difference in instructions
//! between two COUNTs, divided by the difference in COUNT, is the instructions
//! per operation (BENCHMARKS.md). `--threads 2` uses a multi-threaded runtime.
//! `--session` builds the client and the server with sessions
//! (`.session(SessionOptions::default())`), for what a session costs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use nmsg::{args, Args, Client, Error, RemoteCallback, Router, Server, SessionOptions, Value};
use serde_bytes::ByteBuf;

#[path = "support/in_flight.rs"]
mod in_flight;

/// The system allocator, counting allocations (and reallocations).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Calls outstanding in `inflight`.
const DEPTH: u64 = 64;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Inflight,
    Fire,
}

struct Options {
    mode: Mode,
    count: u64,
    threads: usize,
    session: bool,
}

fn options() -> Result<Options, String> {
    let mut opts = Options {
        mode: Mode::Inflight,
        count: 300_000,
        threads: 0,
        session: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "inflight" => opts.mode = Mode::Inflight,
            "fire" => opts.mode = Mode::Fire,
            "--session" => opts.session = true,
            "--threads" => {
                opts.threads = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--threads needs a number")?
            }
            n => {
                opts.count = n.parse().map_err(|_| {
                    format!(
                        "usage: cost [inflight|fire] [COUNT] [--threads N] [--session]; got {n:?}"
                    )
                })?
            }
        }
    }
    Ok(opts)
}

/// Runs `count` operations of `mode` to the end.
async fn run(router: Router, fired: Arc<AtomicU64>, mode: Mode, count: u64) -> Result<(), Error> {
    let data = ByteBuf::from(vec![7u8; 40]);
    match mode {
        Mode::Inflight => in_flight::echo_calls(&router, DEPTH, count).await?,
        Mode::Fire => {
            let goal = fired.load(Ordering::Relaxed) + count;
            for _ in 0..count {
                router.emit_wait("fire", args![data.clone()]).await?;
            }
            while fired.load(Ordering::Relaxed) < goal {
                tokio::task::yield_now().await;
            }
        }
    }
    Ok(())
}

async fn measure(opts: Options) -> Result<(), String> {
    let fired = Arc::new(AtomicU64::new(0));
    let mut server = Server::tcp("127.0.0.1:0");
    if opts.session {
        server = server.session(SessionOptions::default());
    }
    let server = server.start();
    server.on("echo", |args: Args| -> Result<(), Error> {
        let (v, cb): (Value, RemoteCallback) = args.parse()?;
        cb.call((v,))
    });
    let counter = fired.clone();
    server.on("fire", move |_args: Args| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let Ok(nmsg::transport::Address::Tcp(addr)) = server.started().await else {
        return Err("the server did not start on TCP".into());
    };
    let mut client = Client::tcp(addr.to_string());
    if opts.session {
        client = client.session(SessionOptions::default());
    }
    let client = client.start();
    client.connected().await;
    // On a task of its own, as an application's caller would be.
    let go = |count| {
        tokio::spawn(run(
            client.router().clone(),
            fired.clone(),
            opts.mode,
            count,
        ))
    };
    go(20_000)
        .await
        .expect("the warm-up ran")
        .map_err(|e| e.to_string())?;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    go(opts.count)
        .await
        .expect("the run ran")
        .map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!(
        "{}: {} operations, {:.0} ns and {:.2} allocations per operation",
        match opts.mode {
            Mode::Inflight => "inflight",
            Mode::Fire => "fire",
        },
        opts.count,
        elapsed.as_nanos() as f64 / opts.count as f64,
        allocations as f64 / opts.count as f64
    );
    client.stop().await;
    server.stop().await;
    Ok(())
}

fn main() {
    let opts = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let runtime = match opts.threads {
        0 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .expect("a tokio runtime");
    if let Err(e) = runtime.block_on(measure(opts)) {
        eprintln!("cost: {e}");
        std::process::exit(1);
    }
}
