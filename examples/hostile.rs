//! A hostile message against a real TCP server: one connection sends a
//! 16 MiB bulk of 16,777,200 elements that are not frames (MsgPack nils, or
//! with `--json` a `[0,0,…]` of 8,388,600 zeros), while a well-behaved
//! client keeps asking the server for answers.
//!
//! Run with `cargo run --release --example hostile` and
//! `cargo run --release --example hostile -- --json`. Prints how long the
//! server took to report the message (one summary to the error hook), the
//! slowest answer the other client got meanwhile, and how much the process's
//! resident memory grew at its peak (read from `/proc/self/statm`, sampled
//! every millisecond, and the kernel's high-water mark). Exits with 1 when
//! an answer took more than 1 s or memory grew by 64 MiB or more. A
//! benchmark-style check, for a release build on a quiet machine; the
//! memory bound itself is tested in `tests/faults_decode.rs`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nmsg::transport::Address;
use nmsg::{args, Args, Callback, Client, Error, Json, MsgPack, RemoteCallback, Server};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const MIB: usize = 1 << 20;
/// The most the process may grow while the server takes the message.
const MEMORY_LIMIT: usize = 64 * MIB;
/// The longest the well-behaved client may wait for an answer.
const LATENCY_LIMIT: Duration = Duration::from_secs(1);
/// MsgPack: an array header (`0xdd`, 32-bit count) and one `0xc0` per element.
const NILS: usize = 16_777_200;
/// JSON: `[0,0,…]`, two bytes per element.
const ZEROS: usize = 8_388_600;

/// The hostile message, with its length prefix, and how many elements it has.
fn hostile_message(json: bool) -> (Vec<u8>, usize) {
    let (mut payload, count) = if json {
        let mut text = Vec::with_capacity(2 * ZEROS + 1);
        text.push(b'[');
        for n in 0..ZEROS {
            if n > 0 {
                text.push(b',');
            }
            text.push(b'0');
        }
        text.push(b']');
        (text, ZEROS)
    } else {
        let mut bytes = Vec::with_capacity(5 + NILS);
        bytes.push(0xdd);
        bytes.extend_from_slice(&(NILS as u32).to_be_bytes());
        bytes.resize(5 + NILS, 0xc0);
        (bytes, NILS)
    };
    let mut message = (payload.len() as u32).to_be_bytes().to_vec();
    message.append(&mut payload);
    (message, count)
}

/// The process's resident memory in bytes (`/proc/self/statm`, second field).
fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// The kernel's high-water mark of resident memory (`VmHWM`), in bytes.
fn high_water_mark() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples [`resident`] every millisecond, keeping the largest, until dropped.
struct Sampler {
    peak: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    fn start() -> Self {
        let peak = Arc::new(AtomicUsize::new(resident()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(resident(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Sampler { peak, stop }
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed).max(resident())
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One `echo(n, cb)` round trip; its time.
async fn round_trip(client: &Client, n: u64) -> Result<Duration, Error> {
    let start = Instant::now();
    let (cb, reply) = Callback::<(u64,)>::once();
    client.router().emit("echo", args![n, cb])?;
    let (echoed,) = reply.await?;
    assert_eq!(echoed, n);
    Ok(start.elapsed())
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / MIB as f64
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(std::env::args().any(|a| a == "--json")).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hostile: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(json: bool) -> Result<bool, Box<dyn std::error::Error>> {
    let (message, count) = hostile_message(json);
    let bytes = message.len() - 4;
    let codec_name = if json { "json" } else { "msgpack" };

    let server = if json {
        Server::tcp("127.0.0.1:0").codec(Json)
    } else {
        Server::tcp("127.0.0.1:0").codec(MsgPack)
    }
    .start();
    server.on("echo", |args: Args| -> Result<(), Error> {
        let (n, cb): (u64, RemoteCallback) = args.parse()?;
        cb.call((n,))
    });
    // Every socket's error hook: the first report is kept whole, the others
    // only counted (the old decoder made 16 million of them).
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let hook_calls = Arc::new(AtomicUsize::new(0));
    let calls = hook_calls.clone();
    server.on_socket(move |socket| {
        let (tx, calls) = (reports_tx.clone(), calls.clone());
        socket.router().on_error(move |e| {
            if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                let _ = tx.send((Instant::now(), e.to_string()));
            }
        });
    });
    let Address::Tcp(addr) = server.started().await? else {
        unreachable!("a TCP server")
    };

    let client = if json {
        Client::tcp(addr.to_string()).codec(Json)
    } else {
        Client::tcp(addr.to_string()).codec(MsgPack)
    }
    .start();
    round_trip(&client, 0).await?;

    // From here on, what the process grows by is the server's doing (and
    // the attacker's socket): the message itself was built above.
    let base = resident();
    let _ = std::fs::write("/proc/self/clear_refs", "5"); // resets VmHWM
    let sampler = Sampler::start();

    let mut attacker = tokio::net::TcpStream::connect(addr).await?;
    let sending = tokio::spawn(async move {
        attacker.write_all(&message).await?;
        let written = Instant::now();
        drop(message);
        Ok::<_, std::io::Error>((written, attacker))
    });

    // The well-behaved client asks and asks until the server has reported
    // the message, and once more after.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut answers = 0u64;
    let mut report = None;
    let deadline = started + Duration::from_secs(30);
    loop {
        let took = tokio::time::timeout(Duration::from_secs(10), round_trip(&client, answers + 1))
            .await
            .map_err(|_| "no answer within 10 s")??;
        slowest = slowest.max(took);
        answers += 1;
        if report.is_some() {
            break;
        }
        if let Ok(r) = reports.try_recv() {
            report = Some(r);
        }
        if Instant::now() > deadline {
            return Err("the server did not report the message within 30 s".into());
        }
    }
    let (written, attacker) = sending.await??;
    let (reported, text) = report.expect("a report");
    let peak = sampler.peak().max(high_water_mark().unwrap_or(0));
    drop(sampler);
    drop(attacker);
    let growth = peak.saturating_sub(base);

    println!(
        "hostile {codec_name} bulk: {count} elements that are not frames, {bytes} bytes, from one connection"
    );
    println!(
        "sent in {} ms; the server reported it {} ms after the last byte, in {} error-hook call(s):",
        written.duration_since(started).as_millis(),
        reported.saturating_duration_since(written).as_millis(),
        hook_calls.load(Ordering::Relaxed),
    );
    println!("  {text}");
    println!(
        "well-behaved client: {answers} answers meanwhile, the slowest in {:.1} ms (limit {} ms)",
        slowest.as_secs_f64() * 1e3,
        LATENCY_LIMIT.as_millis()
    );
    println!(
        "resident memory: {:.1} MiB before, +{:.1} MiB at the peak (limit {} MiB)",
        mib(base),
        mib(growth),
        MEMORY_LIMIT / MIB
    );
    let ok = slowest <= LATENCY_LIMIT && growth < MEMORY_LIMIT;
    println!("{}", if ok { "ok" } else { "FAILED" });
    client.stop().await;
    server.stop().await;
    Ok(ok)
}
