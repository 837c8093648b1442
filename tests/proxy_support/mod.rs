//! A fault-injecting TCP proxy for the session tests: it listens on
//! `127.0.0.1:0`, forwards every connection to a target, and, as the test
//! says, cuts connections at random points (in the middle of a message, in
//! either direction, several times a second) or stops forwarding without
//! closing (a half-open connection).
//!
//! The proxy runs on a thread of its own (its own Tokio runtime), so that a
//! synchronous test that drives child processes and an async test alike can
//! use it; it is controlled through [`Proxy`] from any thread and stops when
//! dropped.
//!
//! Cut points are drawn from a seeded generator, one stream per connection
//! (the connection's index mixed into the seed), so a run is repeatable as far
//! as the traffic is: a cut after N bytes of a direction falls on the same byte
//! of the same stream again. `NMSG_PROXY_SEED` overrides the seed of every
//! proxy, to replay a failure; the seed in use is in [`Proxy::seed`] and the
//! tests print it.

#![allow(dead_code)] // each test binary uses a part

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the proxy does to the connections it accepts from now on.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Cut each connection once this many bytes went through it in one
    /// direction: each direction draws its own count from the range, so a cut
    /// falls on either, mostly in the middle of a message. The bytes up to
    /// the cut point are forwarded, the rest of that read is not.
    pub cut_after_bytes: Option<RangeInclusive<u64>>,
    /// Cut each connection after a time drawn from this range, whatever went
    /// through it: a link that breaks several times a second even when idle.
    pub cut_after_time: Option<RangeInclusive<Duration>>,
}

impl Faults {
    /// No faults: every byte is forwarded.
    pub fn none() -> Faults {
        Faults::default()
    }
}

/// Counters of what the proxy did, for the tests' assertions and messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections cut after their byte budget ran out, client to target.
    pub cuts_up: u64,
    /// The same, target to client.
    pub cuts_down: u64,
    /// Connections cut on their timer.
    pub cuts_timed: u64,
    /// Connections cut by [`Proxy::cut_all`].
    pub cuts_ordered: u64,
    /// Connections stopped by [`Proxy::stall`] (still open, forwarding nothing).
    pub stalled: u64,
    /// Bytes forwarded client to target.
    pub bytes_up: u64,
    /// Bytes forwarded target to client.
    pub bytes_down: u64,
}

impl Stats {
    /// Every cut, whatever its cause.
    pub fn cuts(&self) -> u64 {
        self.cuts_up + self.cuts_down + self.cuts_timed + self.cuts_ordered
    }
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    cuts_up: AtomicU64,
    cuts_down: AtomicU64,
    cuts_timed: AtomicU64,
    cuts_ordered: AtomicU64,
    stalled: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// One live connection, as the control side sees it.
struct Link {
    /// Cancelled to close both sockets.
    cut: CancellationToken,
    /// Cancelled to stop forwarding while keeping both sockets open.
    stall: CancellationToken,
}

struct Shared {
    seed: u64,
    target: Mutex<SocketAddr>,
    faults: Mutex<Faults>,
    links: Mutex<Vec<Link>>,
    counters: Counters,
}

/// The proxy; dropping it closes every connection and stops its thread.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("seed", &self.shared.seed)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Proxy {
    /// Starts a proxy to `target` on `127.0.0.1:0`, forwarding without faults
    /// until [`Proxy::set_faults`]. `seed` seeds the cut points, unless
    /// `NMSG_PROXY_SEED` is set.
    pub fn start(target: SocketAddr, seed: u64) -> Proxy {
        let seed = std::env::var("NMSG_PROXY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(seed);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            seed,
            target: Mutex::new(target),
            faults: Mutex::new(Faults::none()),
            links: Mutex::new(Vec::new()),
            counters: Counters::default(),
        });
        let shutdown = CancellationToken::new();
        let thread = {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name("fault-proxy".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("proxy runtime");
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(listener).expect("tokio listener");
                        accept_loop(listener, shared, shutdown).await;
                    });
                })
                .expect("spawn the proxy thread")
        };
        Proxy {
            addr,
            shared,
            shutdown,
            thread: Some(thread),
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The seed of the cut points.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// Where new connections go (a restarted server listens elsewhere).
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap() = target;
    }

    /// The faults of the connections accepted from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// Cuts every open connection now (both sockets closed).
    pub fn cut_all(&self) {
        for link in self.live_links() {
            if !link.cut.is_cancelled() && !link.stall.is_cancelled() {
                self.shared
                    .counters
                    .cuts_ordered
                    .fetch_add(1, Ordering::Relaxed);
            }
            link.cut.cancel();
        }
    }

    /// Every open connection stops forwarding, in both directions, without
    /// closing: neither end learns anything, as behind a dead router. The
    /// connections accepted afterwards forward as usual. A stalled
    /// connection's sockets stay open until [`Proxy::release_stalled`] or the
    /// proxy is dropped; its timed and byte cuts are off.
    pub fn stall(&self) {
        for link in self.live_links() {
            if !link.stall.is_cancelled() && !link.cut.is_cancelled() {
                self.shared.counters.stalled.fetch_add(1, Ordering::Relaxed);
                link.stall.cancel();
            }
        }
    }

    /// Closes the stalled connections' sockets.
    pub fn release_stalled(&self) {
        for link in self.live_links() {
            if link.stall.is_cancelled() {
                link.cut.cancel();
            }
        }
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            accepted: c.accepted.load(Ordering::Relaxed),
            cuts_up: c.cuts_up.load(Ordering::Relaxed),
            cuts_down: c.cuts_down.load(Ordering::Relaxed),
            cuts_timed: c.cuts_timed.load(Ordering::Relaxed),
            cuts_ordered: c.cuts_ordered.load(Ordering::Relaxed),
            stalled: c.stalled.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
        }
    }

    /// The connections not yet closed (closed ones are forgotten here).
    fn live_links(&self) -> Vec<Link> {
        let mut links = self.shared.links.lock().unwrap();
        links.retain(|l| !l.cut.is_cancelled());
        links
            .iter()
            .map(|l| Link {
                cut: l.cut.clone(),
                stall: l.stall.clone(),
            })
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut index = 0u64;
    loop {
        let client = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        index += 1;
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let link = Link {
            cut: shutdown.child_token(),
            stall: CancellationToken::new(),
        };
        let (cut, stall) = (link.cut.clone(), link.stall.clone());
        shared.links.lock().unwrap().push(link);
        let faults = shared.faults.lock().unwrap().clone();
        let target = *shared.target.lock().unwrap();
        // One generator a connection, from the seed and the connection's index.
        let mut rng = fastrand::Rng::with_seed(
            shared
                .seed
                .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        let budget_up = faults
            .cut_after_bytes
            .clone()
            .map(|r| rng.u64(r))
            .unwrap_or(u64::MAX);
        let budget_down = faults
            .cut_after_bytes
            .clone()
            .map(|r| rng.u64(r))
            .unwrap_or(u64::MAX);
        let timer = faults.cut_after_time.clone().map(|r| {
            let (lo, hi) = (r.start().as_micros() as u64, r.end().as_micros() as u64);
            Duration::from_micros(rng.u64(lo..=hi))
        });
        let shared = shared.clone();
        tokio::spawn(async move {
            let upstream = tokio::select! {
                _ = cut.cancelled() => return,
                up = TcpStream::connect(target) => match up {
                    Ok(up) => up,
                    Err(_) => {
                        cut.cancel(); // the client sees its connection close
                        return;
                    }
                },
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (up_read, up_write) = upstream.into_split();
            if let Some(after) = timer {
                let (cut, stall, shared) = (cut.clone(), stall.clone(), shared.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = stall.cancelled() => {}
                        _ = tokio::time::sleep(after) => {
                            if !stall.is_cancelled() && !cut.is_cancelled() {
                                shared.counters.cuts_timed.fetch_add(1, Ordering::Relaxed);
                                cut.cancel();
                            }
                        }
                    }
                });
            }
            let up = tokio::spawn(pump(
                client_read,
                up_write,
                budget_up,
                Direction::Up,
                cut.clone(),
                stall.clone(),
                shared.clone(),
            ));
            let down = pump(
                up_read,
                client_write,
                budget_down,
                Direction::Down,
                cut.clone(),
                stall,
                shared,
            );
            down.await;
            let _ = up.await;
            // Both directions ended (cut, reset, or closed by both ends):
            // the link is gone.
            cut.cancel();
        });
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Up,
    Down,
}

/// Forwards one direction until the link is cut (both sockets close when both
/// pumps have returned), its byte budget runs out (the bytes up to the cut
/// point are written, then the link is cut), or the source ends (the end is
/// passed on as a write shutdown and the other direction goes on). A stalled
/// link holds its sockets open and forwards nothing until cut.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut budget: u64,
    direction: Direction,
    cut: CancellationToken,
    stall: CancellationToken,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let (bytes, cuts) = match direction {
        Direction::Up => (&shared.counters.bytes_up, &shared.counters.cuts_up),
        Direction::Down => (&shared.counters.bytes_down, &shared.counters.cuts_down),
    };
    loop {
        let n = tokio::select! {
            biased;
            _ = cut.cancelled() => return,
            _ = stall.cancelled() => {
                cut.cancelled().await;
                return;
            }
            read = from.read(&mut buf) => match read {
                Ok(0) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
                Err(_) => {
                    cut.cancel();
                    return;
                }
            },
        };
        if stall.is_cancelled() {
            cut.cancelled().await;
            return;
        }
        let (forward, cutting) = if (n as u64) >= budget {
            (budget as usize, true)
        } else {
            (n, false)
        };
        budget -= forward as u64;
        let wrote = tokio::select! {
            biased;
            _ = cut.cancelled() => return,
            _ = stall.cancelled() => {
                cut.cancelled().await;
                return;
            }
            wrote = to.write_all(&buf[..forward]) => wrote,
        };
        if wrote.is_err() {
            cut.cancel();
            return;
        }
        bytes.fetch_add(forward as u64, Ordering::Relaxed);
        if cutting {
            if !cut.is_cancelled() && !stall.is_cancelled() {
                cuts.fetch_add(1, Ordering::Relaxed);
            }
            cut.cancel();
            return;
        }
    }
}
