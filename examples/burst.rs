//! The dispatch burst (`ConnectionOptions::dispatch_burst`, which the client
//! and server builders set) under four arrangements of client and server,
//! with the load of the benchmark's `inflight64`: 64 `request("echo", [40
//! bytes])` outstanding on one loopback TCP connection, answered by the
//! server's `on("echo")` handler.
//!
//! ```text
//! cargo run --release --example burst -- [--calls N] [--runs R] [--bursts 8,16,none]
//!                                          [--arrangements NAME,..] [--depth D]
//! ```
//!
//! Arrangements:
//!
//! - `processes`: the server in a child process (this binary with `--serve`),
//!   the client here, each on a default multi-threaded runtime, the calls made
//!   from a spawned task;
//! - `spawned`: client and server on one multi-threaded runtime, the calls made
//!   from a spawned task (the benchmark's arrangement);
//! - `block-on`: the same runtime, the calls made from its `block_on` future
//!   (as from `#[tokio::main]`), so off its worker threads;
//! - `split`: the server and the client on runtimes of their own with one
//!   worker thread each.
//!
//! Each run uses a fresh runtime, server and connection, warms up with 20,000
//! calls, then times N calls (default 300,000). Printed: for each arrangement and
//! burst, the median of R runs (default 5) in nanoseconds per call, and the runs.
//! `none` is no limit (`usize::MAX`). `--depth` changes the calls outstanding
//! (default 64).

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use nmsg::{Args, Client, Error, RemoteCallback, Server, Value};

#[path = "support/in_flight.rs"]
mod in_flight;

#[derive(Clone, Copy, PartialEq)]
enum Arrangement {
    Processes,
    Spawned,
    BlockOn,
    Split,
}

impl Arrangement {
    const ALL: [Arrangement; 4] = [
        Arrangement::Processes,
        Arrangement::Spawned,
        Arrangement::BlockOn,
        Arrangement::Split,
    ];

    fn name(self) -> &'static str {
        match self {
            Arrangement::Processes => "processes",
            Arrangement::Spawned => "spawned",
            Arrangement::BlockOn => "block-on",
            Arrangement::Split => "split",
        }
    }
}

struct Options {
    calls: u64,
    /// Calls outstanding (64, as in `inflight64`).
    depth: u64,
    runs: usize,
    bursts: Vec<usize>,
    arrangements: Vec<Arrangement>,
}

fn burst_name(burst: usize) -> String {
    if burst == usize::MAX {
        "none".into()
    } else {
        burst.to_string()
    }
}

fn options(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        calls: 300_000,
        depth: 64,
        runs: 5,
        bursts: vec![8, 12, 16, 24, 32, usize::MAX],
        arrangements: Arrangement::ALL.to_vec(),
    };
    let usage = "usage: burst [--calls N] [--runs R] [--bursts 8,16,none] [--arrangements processes,spawned,block-on,split] [--depth D]";
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| usage.to_string());
        match arg.as_str() {
            "--calls" => opts.calls = value()?.parse().map_err(|_| usage)?,
            "--runs" => opts.runs = value()?.parse().map_err(|_| usage)?,
            "--depth" => opts.depth = value()?.parse().map_err(|_| usage)?,
            "--bursts" => {
                opts.bursts = value()?
                    .split(',')
                    .map(|b| match b {
                        "none" => Ok(usize::MAX),
                        n => n.parse().ok().filter(|&n| n > 0).ok_or(usage),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--arrangements" => {
                opts.arrangements = value()?
                    .split(',')
                    .map(|n| {
                        Arrangement::ALL
                            .into_iter()
                            .find(|a| a.name() == n)
                            .ok_or_else(|| format!("unknown arrangement {n:?}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(usage.into()),
        }
    }
    if opts.runs == 0 || opts.calls == 0 || opts.depth == 0 {
        return Err(usage.into());
    }
    Ok(opts)
}

/// A server answering `echo(value, cb)` with `cb(value)`, with the given burst.
fn server(burst: usize) -> Server {
    let server = Server::tcp("127.0.0.1:0").dispatch_burst(burst).start();
    server.on("echo", |args: Args| -> Result<(), Error> {
        let (v, cb): (Value, RemoteCallback) = args.parse()?;
        cb.call((v,))
    });
    server
}

async fn server_address(server: &Server) -> String {
    match server.started().await {
        Ok(nmsg::transport::Address::Tcp(addr)) => addr.to_string(),
        other => panic!("the server did not start on TCP: {other:?}"),
    }
}

/// Connects, warms up, and times `calls` calls with `depth` outstanding;
/// gives nanoseconds per call.
async fn load(addr: String, burst: usize, calls: u64, depth: u64) -> Result<f64, Error> {
    let client = Client::tcp(addr).dispatch_burst(burst).start();
    client.connected().await;
    let mut elapsed = 0.0;
    for (count, timed) in [(20_000, false), (calls, true)] {
        let start = Instant::now();
        in_flight::echo_calls(client.router(), depth, count).await?;
        if timed {
            elapsed = start.elapsed().as_nanos() as f64 / count as f64;
        }
    }
    client.stop().await;
    Ok(elapsed)
}

fn multi_thread(workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder.enable_all().build().expect("a tokio runtime")
}

/// One timed run: nanoseconds per call.
fn run(arrangement: Arrangement, burst: usize, opts: &Options) -> Result<f64, String> {
    let (calls, depth) = (opts.calls, opts.depth);
    let err = |e: Error| e.to_string();
    match arrangement {
        Arrangement::Processes => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut child = Command::new(exe)
                .args(["--serve", &burst.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start the server process: {e}"))?;
            let mut addr = String::new();
            let stdout = child.stdout.take().expect("piped");
            std::io::BufReader::new(stdout)
                .read_line(&mut addr)
                .map_err(|e| e.to_string())?;
            let addr = addr.trim().to_string();
            if addr.is_empty() {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the server process did not report its address".into());
            }
            let result = multi_thread(None)
                .block_on(async move { tokio::spawn(load(addr, burst, calls, depth)).await })
                .map_err(|e| e.to_string())?
                .map_err(err);
            // Closing its stdin ends the server process.
            drop(child.stdin.take());
            let _ = child.wait();
            result
        }
        Arrangement::Spawned | Arrangement::BlockOn => multi_thread(None).block_on(async move {
            let server = server(burst);
            let addr = server_address(&server).await;
            let ns = if arrangement == Arrangement::Spawned {
                tokio::spawn(load(addr, burst, calls, depth))
                    .await
                    .map_err(|e| e.to_string())?
            } else {
                load(addr, burst, calls, depth).await
            };
            server.stop().await;
            ns.map_err(err)
        }),
        Arrangement::Split => {
            let servers = multi_thread(Some(1));
            let server = servers.block_on(async move {
                let server = server(burst);
                let addr = server_address(&server).await;
                (server, addr)
            });
            let (server, addr) = server;
            let ns = multi_thread(Some(1))
                .block_on(async move { tokio::spawn(load(addr, burst, calls, depth)).await })
                .map_err(|e| e.to_string())?
                .map_err(err);
            servers.block_on(server.stop());
            ns
        }
    }
}

/// `--serve BURST`: the server process of the `processes` arrangement. Prints
/// its address, then serves until its stdin closes.
fn serve(burst: &str) -> ! {
    let burst = match burst {
        "none" => usize::MAX,
        n => n.parse().unwrap_or_else(|_| {
            eprintln!("--serve needs a burst");
            std::process::exit(2)
        }),
    };
    let runtime = multi_thread(None);
    let _server = runtime.block_on(async {
        let server = server(burst);
        println!("{}", server_address(&server).await);
        let _ = std::io::stdout().flush();
        server
    });
    // The runtime's worker threads serve; this thread waits for the end.
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    std::process::exit(0)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--serve") {
        args.next();
        serve(&args.next().unwrap_or_default());
    }
    let opts = match options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    println!(
        "nanoseconds per call, median of {} runs of {} calls, {} outstanding ({} CPUs)",
        opts.runs,
        opts.calls,
        opts.depth,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| arrangement | burst | ns per call | runs |");
    println!("|---|---:|---:|---|");
    for &arrangement in &opts.arrangements {
        for &burst in &opts.bursts {
            let mut runs = Vec::with_capacity(opts.runs);
            for _ in 0..opts.runs {
                match run(arrangement, burst, &opts) {
                    Ok(ns) => runs.push(ns),
                    Err(e) => {
                        eprintln!("{} burst {}: {e}", arrangement.name(), burst_name(burst));
                        std::process::exit(1);
                    }
                }
            }
            let shown: Vec<String> = runs.iter().map(|ns| format!("{ns:.0}")).collect();
            println!(
                "| {} | {} | {:.0} | {} |",
                arrangement.name(),
                burst_name(burst),
                median(&mut runs),
                shown.join(", ")
            );
        }
    }
}
