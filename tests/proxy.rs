//! The fault-injecting proxy of the session tests (`tests/proxy_support`),
//! tested on its own against plain TCP ends: it forwards bytes unchanged,
//! cuts after a seeded number of bytes in either direction (the same point
//! for the same seed), cuts on a timer several times a second, and stalls a
//! connection without closing it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

mod proxy_support;
use proxy_support::{Faults, Proxy};

/// An echo server; returns its address.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A server that reads each connection to its end and sends what it read,
/// and whether the end was clean, on the channel.
async fn sink_server() -> (SocketAddr, mpsc::UnboundedReceiver<(Vec<u8>, bool)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let clean = s.read_to_end(&mut got).await.is_ok();
                let _ = tx.send((got, clean));
            });
        }
    });
    (addr, rx)
}

/// A server that writes `len` seeded bytes to each connection, then closes it.
async fn source_server(len: usize) -> (SocketAddr, Vec<u8>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    let served = data.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let data = served.clone();
            tokio::spawn(async move {
                let _ = s.write_all(&data).await;
            });
        }
    });
    (addr, data)
}

fn seeded_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

#[tokio::test]
async fn without_faults_every_byte_goes_through_both_ways() {
    let proxy = Proxy::start(echo_server().await, 1);
    let data = seeded_bytes(1 << 20, 2);
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut r, mut w) = s.split();
    let (wrote, got) = tokio::join!(w.write_all(&data), async {
        let mut got = vec![0u8; data.len()];
        r.read_exact(&mut got).await.map(|_| got)
    });
    wrote.unwrap();
    assert!(got.unwrap() == data, "the echo differs from what was sent");
    let stats = proxy.stats();
    assert_eq!(stats.cuts(), 0, "{stats:?}");
    assert_eq!(stats.bytes_up, data.len() as u64);
    assert_eq!(stats.bytes_down, data.len() as u64);
}

/// Writes 200 KB through a proxy cutting after 1,000 to 50,000 bytes; returns
/// how many bytes the target got on each of three connections.
async fn cut_points_upward(seed: u64) -> Vec<usize> {
    let (target, mut received) = sink_server().await;
    let proxy = Proxy::start(target, seed);
    proxy.set_faults(Faults {
        cut_after_bytes: Some(1_000..=50_000),
        ..Faults::none()
    });
    let data = seeded_bytes(200_000, 3);
    let mut points = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        // The write fails once the proxy has cut; how far it got is not the point.
        let _ = s.write_all(&data).await;
        let (got, _) = tokio::time::timeout(Duration::from_secs(5), received.recv())
            .await
            .expect("the target's connection did not end after the cut")
            .unwrap();
        assert!(
            (1_000..=50_000).contains(&got.len()),
            "cut after {} bytes, outside the range",
            got.len()
        );
        assert!(
            data.starts_with(&got),
            "the target got other bytes than a prefix"
        );
        points.push(got.len());
    }
    let stats = proxy.stats();
    assert_eq!(stats.cuts_up, 3, "{stats:?}");
    points
}

#[tokio::test]
async fn a_cut_upward_forwards_a_prefix_then_closes_at_the_same_byte_for_the_same_seed() {
    let first = cut_points_upward(11).await;
    let again = cut_points_upward(11).await;
    assert_eq!(first, again, "the same seed cut at other points");
    let other = cut_points_upward(12).await;
    assert_ne!(first, other, "another seed cut at the same points");
    // Three connections of one proxy draw different points.
    assert!(first[0] != first[1] || first[1] != first[2], "{first:?}");
}

#[tokio::test]
async fn a_cut_downward_forwards_a_prefix_then_closes() {
    let (target, data) = source_server(300_000).await;
    let proxy = Proxy::start(target, 5);
    proxy.set_faults(Faults {
        cut_after_bytes: Some(10_000..=100_000),
        ..Faults::none()
    });
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut got = Vec::new();
    // Closed (FIN or reset) after the cut: either way, what came is a prefix.
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("the client's connection did not end after the cut");
    assert!(
        (10_000..=100_000).contains(&got.len()),
        "{} bytes",
        got.len()
    );
    assert!(data.starts_with(&got));
    assert_eq!(proxy.stats().cuts_down, 1, "{:?}", proxy.stats());
}

#[tokio::test]
async fn timed_cuts_close_even_idle_connections_several_times_a_second() {
    let proxy = Proxy::start(echo_server().await, 9);
    proxy.set_faults(Faults {
        cut_after_time: Some(Duration::from_millis(50)..=Duration::from_millis(150)),
        ..Faults::none()
    });
    let start = Instant::now();
    for k in 0..5 {
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        let mut rest = Vec::new();
        let opened = Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("connection {k} was not cut"));
        assert!(opened.elapsed() < Duration::from_millis(1000));
    }
    assert_eq!(proxy.stats().cuts_timed, 5, "{:?}", proxy.stats());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_stalled_connection_forwards_nothing_and_stays_open_while_new_ones_pass() {
    let (target, mut ended) = sink_server().await;
    let echo = echo_server().await;
    let proxy = Proxy::start(target, 4);
    let mut stalled = TcpStream::connect(proxy.addr()).await.unwrap();
    stalled.write_all(b"before").await.unwrap();
    // Forwarded: wait until the proxy counted it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.stats().bytes_up < 6 {
        assert!(Instant::now() < deadline, "nothing forwarded");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    proxy.stall();
    assert_eq!(proxy.stats().stalled, 1);
    stalled.write_all(b"after").await.unwrap();
    // The client closing its end is not passed on either: the target's
    // connection stays open, half-open.
    stalled.shutdown().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ended.recv())
            .await
            .is_err(),
        "the target saw its connection end through a stalled proxy"
    );
    // A new connection (to another target) forwards as usual.
    proxy.set_target(echo);
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    fresh.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), fresh.read_exact(&mut buf))
        .await
        .expect("a connection after the stall got no echo")
        .unwrap();
    assert_eq!(&buf, b"hello");
    // Released, the stalled connection closes; the target got only what
    // came before the stall.
    proxy.release_stalled();
    let (got, _) = tokio::time::timeout(Duration::from_secs(5), ended.recv())
        .await
        .expect("the stalled connection did not close when released")
        .unwrap();
    assert_eq!(got, b"before");
}
