//! How typed calls fail: every failure ends the call with the documented
//! `nmsg::Error`, within its bound, and a bad event is reported, never a hang
//! or a panic. Time is paused where a timeout is awaited.

mod typed_support;

use std::time::Duration;

use nmsg::{Args, RemoteCallback};
use tokio::time::Instant;
use typed_support::*;

/// Keeps the reply callbacks of `event` without invoking them, and says when one came.
fn never_answer(link: &Link, event: &str) -> tokio::sync::mpsc::UnboundedReceiver<RemoteCallback> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    link.server
        .on(event, move |args: Args| -> Result<(), nmsg::Error> {
            let cb = args.callback(args.len() - 1)?;
            tx.send(cb).map_err(|_| nmsg::Error::Closed)
        });
    rx
}

#[tokio::test(start_paused = true)]
async fn a_reply_that_never_comes_times_out_with_the_default_timeout() {
    let link = connect_with(Transport::Memory, None).await;
    let _kept = never_answer(&link, "ping");
    let start = Instant::now();
    let error = GreeterClient::new(&link.client).ping().await.unwrap_err();
    assert!(
        matches!(error, nmsg::Error::Timeout(t) if t == Duration::from_secs(15)),
        "{error}"
    );
    // The protocol's 15 s, plus the router's latency allowance of 500 ms.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(15) && waited <= Duration::from_millis(15_600),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_timeout_bounds_its_calls() {
    let link = connect_with(Transport::Memory, None).await;
    let mut kept = never_answer(&link, "div");
    let client = GreeterClient::new(&link.client).with_timeout(Duration::from_secs(2));
    assert_eq!(client.timeout(), Some(Duration::from_secs(2)));
    // The client's 2 s, plus the router's latency allowance.
    let deadline = Instant::now() + Duration::from_secs(2) + nmsg::DEFAULT_LATENCY_ALLOWANCE;
    let mut call = std::pin::pin!(client.div(1.0, 2.0));
    // Paused time: the clock moves only when every task waits.
    let early = tokio::time::timeout_at(deadline - Duration::from_millis(1), &mut call).await;
    assert!(
        early.is_err(),
        "the call ended before its timeout: {early:?}"
    );
    // The peer has the call and keeps its callback.
    let _held = kept.try_recv().expect("the call reached the peer");
    let error = tokio::time::timeout_at(deadline + Duration::from_millis(50), call)
        .await
        .expect("the call did not end just after its timeout")
        .unwrap_err();
    assert!(
        matches!(error, nmsg::Error::Timeout(t) if t == Duration::from_secs(2)),
        "{error}"
    );
    assert!(Instant::now() >= deadline);
    assert_eq!(link.client.pending_frames(), 0);
}

#[tokio::test]
async fn a_peer_that_disconnects_ends_the_call_with_disconnected() {
    let link = connect().await;
    let mut kept = never_answer(&link, "ping");
    let call = GreeterClient::new(&link.client).ping();
    // The server has the event (and holds its callback) before the link drops.
    let _cb = kept.recv().await.unwrap();
    link.disconnect().await;
    let error = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call ends when the connection drops")
        .unwrap_err();
    assert!(matches!(error, nmsg::Error::Disconnected(_)), "{error}");
}

#[tokio::test]
async fn a_reply_of_the_wrong_type_is_an_argument_error() {
    let link = connect().await;
    link.server
        .on("ping", |args: Args| -> Result<(), nmsg::Error> {
            args.callback(0)?.call((42,))
        });
    link.server
        .on("div", |args: Args| -> Result<(), nmsg::Error> {
            // An error that is not the declared `String`.
            args.callback(2)?.call((vec![1, 2],))
        });
    let client = GreeterClient::new(&link.client);
    let error = client.ping().await.unwrap_err();
    assert!(
        matches!(error, nmsg::Error::Argument { index: 0, .. }),
        "{error}"
    );
    let error = client.div(1.0, 2.0).await.unwrap_err();
    assert!(
        matches!(error, nmsg::Error::Argument { index: 0, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn an_event_whose_arguments_do_not_decode_is_reported_and_not_handled() {
    let link = connect().await;
    let mut errors = collect_errors(&link.server);
    let greeter = GreeterApi::new(MyGreeter::default());
    greeter.serve(&link.server);
    // `hello` takes a string; a number is not one.
    link.client.emit("hello", (42,)).unwrap();
    // `ping` without the trailing callback its reply needs.
    link.client.emit("ping", ()).unwrap();
    for event in ["hello", "ping"] {
        match next_error(&mut errors).await {
            nmsg::Error::Handler { event: e, source } => {
                assert_eq!(e, event);
                assert!(source.to_string().starts_with("argument 0"), "{source}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    // The connection goes on, and the method never ran.
    assert_eq!(GreeterClient::new(&link.client).count().await.unwrap(), 0);
    assert!(greeter.service().names.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_call_on_a_closed_router_fails_at_once() {
    let link = connect().await;
    link.client.close();
    let client = GreeterClient::new(&link.client);
    assert!(matches!(
        client.hello("Ann".into()),
        Err(nmsg::Error::Closed)
    ));
    assert!(matches!(client.ping().await, Err(nmsg::Error::Closed)));
}

#[nmsg::events]
trait Fragile {
    fn boom(&self) -> u32;
    async fn boom_later(&self) -> u32;
}

struct Bomb;

impl Fragile for Bomb {
    fn boom(&self) -> u32 {
        panic!("boom")
    }
    async fn boom_later(&self) -> u32 {
        panic!("later")
    }
}

#[tokio::test]
async fn a_panicking_handler_is_reported_and_the_connection_goes_on() {
    let link = connect().await;
    let mut errors = collect_errors(&link.server);
    FragileApi::new(Bomb).serve(&link.server);
    GreeterApi::new(MyGreeter::default()).serve(&link.server);
    let client = FragileClient::new(&link.client);
    // Nobody answers these; their responses time out in the background.
    let _boom = client.boom();
    let _later = client.boom_later();
    for (event, message) in [("boom", "boom"), ("boom_later", "later")] {
        match next_error(&mut errors).await {
            nmsg::Error::HandlerPanicked {
                event: e,
                message: m,
                ..
            } => {
                assert_eq!((e.as_str(), m.as_str()), (event, message));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        GreeterClient::new(&link.client).ping().await.unwrap(),
        "pong"
    );
}
