//! A transport's handshake (`Accepted::Handshake`, as TLS gives) runs on a
//! task of its own: the server's stop does not wait for it, and a stream
//! whose handshake ends after the stop is dropped, not served.

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use nmsg::transport::{Accepted, Acceptor, Address, Binder, BoxFuture, BoxStream};
use nmsg::{Server, ServerEvent};
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

const LIMIT: Duration = Duration::from_secs(5);

/// Accepts one stream, whose handshake ends when the test hands it the
/// stream to serve; then accepts nothing more.
struct Gated {
    /// Tells the test that the stream was accepted.
    accepted: Mutex<Option<oneshot::Sender<()>>>,
    /// The stream the handshake gives, when the test sends it.
    stream: Mutex<Option<oneshot::Receiver<BoxStream>>>,
}

struct GatedAcceptor {
    accepted: Option<oneshot::Sender<()>>,
    stream: Option<oneshot::Receiver<BoxStream>>,
}

impl Binder for Gated {
    fn bind(&self) -> BoxFuture<'_, io::Result<Box<dyn Acceptor>>> {
        let acceptor = GatedAcceptor {
            accepted: self.accepted.lock().unwrap().take(),
            stream: self.stream.lock().unwrap().take(),
        };
        Box::pin(async move { Ok(Box::new(acceptor) as Box<dyn Acceptor>) })
    }

    fn address(&self) -> String {
        "gated".into()
    }
}

impl Acceptor for GatedAcceptor {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, Address)>> {
        Box::pin(std::future::pending())
    }

    fn accept_peer(&mut self) -> BoxFuture<'_, io::Result<Accepted>> {
        let Some(stream) = self.stream.take() else {
            return Box::pin(std::future::pending());
        };
        if let Some(accepted) = self.accepted.take() {
            let _ = accepted.send(());
        }
        Box::pin(async move {
            Ok(Accepted::Handshake {
                peer: Address::Other("gated peer".into()),
                handshake: Box::pin(async move {
                    let stream = stream
                        .await
                        .map_err(|_| io::Error::other("the test dropped the stream"))?;
                    Ok((stream, None))
                }),
            })
        })
    }

    fn local_addr(&self) -> Address {
        Address::Other("gated".into())
    }
}

#[tokio::test]
async fn a_handshake_that_ends_after_the_stop_is_dropped_and_the_stop_does_not_wait_for_it() {
    let (accepted_tx, accepted) = oneshot::channel();
    let (give, stream) = oneshot::channel();
    let server = Server::builder(Gated {
        accepted: Mutex::new(Some(accepted_tx)),
        stream: Mutex::new(Some(stream)),
    })
    .start();
    let mut events = server.events();
    server.started().await.unwrap();
    tokio::time::timeout(LIMIT, accepted)
        .await
        .unwrap()
        .unwrap();
    // The handshake is under way; the stop ends without it.
    tokio::time::timeout(LIMIT, server.stop())
        .await
        .expect("the stop waited for a handshake");
    let (ours, theirs) = tokio::io::duplex(1024);
    give.send(Box::new(theirs) as BoxStream).ok().unwrap();
    // Dropped, not served: our end reads the end of the stream.
    let mut ours = ours;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(LIMIT, ours.read(&mut byte))
        .await
        .expect("the stream was served after the stop");
    assert_eq!(read.unwrap(), 0);
    assert_eq!(server.socket_count(), 0);
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, ServerEvent::Connected { .. }),
            "served after the stop: {event:?}"
        );
    }
}
