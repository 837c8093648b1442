//! A server facing ordinary mistakes and a hostile network: a bind that
//! retrying cannot fix ends the start with its error, accept errors of one
//! connection do not slow accepting down, and a Unix listener touches only
//! the socket file it created, with the mode asked for.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nmsg::transport::memory::Network;
use nmsg::transport::{Acceptor, Address, Binder, BoxFuture, BoxStream, Unix};
use nmsg::{Backoff, Error, Server, ServerEvent};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Far more than any of these starts takes; an old server that retried a
/// bad address forever fails here instead of hanging.
const LIMIT: Duration = Duration::from_secs(30);

/// How the start of `server` ended.
async fn start_of(server: Server) -> Result<Address, Error> {
    let started = tokio::time::timeout(LIMIT, server.started())
        .await
        .expect("started() did not return: the bind is retried");
    // A server that failed has stopped: its stop returns at once.
    if started.is_err() {
        tokio::time::timeout(LIMIT, server.stop())
            .await
            .expect("the stop of a failed server hangs");
    }
    started
}

/// The bind error of a start that failed, checked to be reported once, with
/// no retry.
fn bind_error(
    started: Result<Address, Error>,
    events: &mut broadcast::Receiver<ServerEvent>,
) -> Arc<io::Error> {
    let error = match started {
        Err(Error::Bind { source, .. }) => source,
        other => panic!("expected a bind error, got {other:?}"),
    };
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    assert!(
        matches!(
            seen.as_slice(),
            [ServerEvent::StartFailed { .. }, ServerEvent::Stopped]
        ),
        "{seen:?}"
    );
    error
}

async fn tcp_start(address: &str) -> Arc<io::Error> {
    let server = Server::tcp(address).start();
    let mut events = server.events();
    let started = start_of(server).await;
    bind_error(started, &mut events)
}

#[tokio::test]
async fn a_name_that_does_not_resolve_ends_the_start_with_its_error() {
    // Offline, the name service is not reachable: that too is "does not resolve".
    let error = tcp_start("nonexistent.invalid:1").await;
    println!("nonexistent.invalid: {error}");
    assert!(error.raw_os_error().is_none(), "{error:?}");
}

#[tokio::test]
async fn an_address_not_on_this_machine_ends_the_start_with_its_error() {
    // 192.0.2.0/24 is for documentation: no machine has it.
    let error = tcp_start("192.0.2.1:0").await;
    assert_eq!(error.kind(), io::ErrorKind::AddrNotAvailable, "{error:?}");
}

#[tokio::test]
async fn text_that_is_not_an_address_ends_the_start_with_its_error() {
    let error = tcp_start("no port here").await;
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error:?}");
}

#[tokio::test]
async fn a_privileged_port_ends_the_start_of_an_unprivileged_server() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        println!("skipped: running as root, which may bind port 1 (the permission case is also covered by a_bind_error_is_retried_only_if_retrying_may_fix_it)");
        return;
    }
    let error = tcp_start("127.0.0.1:1").await;
    assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error:?}");
}

#[tokio::test]
async fn a_unix_socket_in_a_missing_directory_ends_the_start_with_its_error() {
    let path = std::env::temp_dir()
        .join(format!("nmsg-missing-{}", std::process::id()))
        .join("s.sock");
    let server = Server::unix(&path).start();
    let mut events = server.events();
    let started = start_of(server).await;
    let error = bind_error(started, &mut events);
    assert_eq!(error.kind(), io::ErrorKind::NotFound, "{error:?}");
}

/// A binder that fails once with a given error, then binds a memory endpoint.
struct FailsOnce {
    error: Mutex<Option<io::Error>>,
    then: nmsg::transport::memory::MemoryBinder,
}

impl Binder for FailsOnce {
    fn bind(&self) -> BoxFuture<'_, io::Result<Box<dyn Acceptor>>> {
        let error = self.error.lock().unwrap().take();
        Box::pin(async move {
            match error {
                Some(error) => Err(error),
                None => self.then.bind().await,
            }
        })
    }

    fn address(&self) -> String {
        "fails-once".into()
    }
}

/// Each kind of error, as a binder gives it: the ones retrying cannot fix end
/// the start; the others are retried (and the second attempt binds).
#[tokio::test(start_paused = true)]
async fn a_bind_error_is_retried_only_if_retrying_may_fix_it() {
    let cases: Vec<(io::Error, bool)> = vec![
        (io::Error::from_raw_os_error(13), false), // EACCES
        (io::Error::from_raw_os_error(1), false),  // EPERM
        (io::Error::from_raw_os_error(99), false), // EADDRNOTAVAIL
        (io::Error::from_raw_os_error(22), false), // EINVAL
        (io::Error::from(io::ErrorKind::InvalidInput), false),
        (io::Error::from_raw_os_error(2), false), // ENOENT: a missing directory
        (io::Error::from_raw_os_error(98), true), // EADDRINUSE
        (io::Error::from_raw_os_error(24), true), // EMFILE
        (io::Error::from_raw_os_error(23), true), // ENFILE
        (io::Error::from_raw_os_error(4), true),  // EINTR
        (io::Error::other("a binder of one's own"), true),
    ];
    for (n, (error, retried)) in cases.into_iter().enumerate() {
        let net = Network::new();
        let shown = format!("{error:?}");
        let server = Server::builder(FailsOnce {
            error: Mutex::new(Some(error)),
            then: net.binder(&format!("svc{n}")),
        })
        .backoff(Backoff::new(Duration::from_secs(1), Duration::from_secs(1)))
        .start();
        let mut events = server.events();
        let started = start_of(server.clone()).await;
        if retried {
            assert!(started.is_ok(), "{shown}: {started:?}");
            assert!(
                matches!(
                    events.try_recv(),
                    Ok(ServerEvent::BindFailed { attempt: 1, .. })
                ),
                "{shown}"
            );
            server.stop().await;
        } else {
            bind_error(started, &mut events);
        }
    }
}

// ----- accept errors -----

/// An acceptor that gives what its script says, records when each accept
/// was asked for, then waits forever.
struct Scripted {
    script: VecDeque<io::Result<()>>,
    asked: Arc<Mutex<Vec<Duration>>>,
    start: Instant,
    /// The test's ends of the streams given.
    peers: Vec<tokio::io::DuplexStream>,
}

impl Acceptor for Scripted {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, Address)>> {
        self.asked.lock().unwrap().push(self.start.elapsed());
        let next = self.script.pop_front();
        Box::pin(async move {
            match next {
                Some(Ok(())) => {
                    let (ours, theirs) = tokio::io::duplex(64);
                    self.peers.push(theirs);
                    Ok((
                        Box::new(ours) as BoxStream,
                        Address::Other("scripted".into()),
                    ))
                }
                Some(Err(e)) => Err(e),
                None => std::future::pending().await,
            }
        })
    }

    fn local_addr(&self) -> Address {
        Address::Other("scripted".into())
    }
}

struct ScriptedBinder(Mutex<Option<Scripted>>);

impl Binder for ScriptedBinder {
    fn bind(&self) -> BoxFuture<'_, io::Result<Box<dyn Acceptor>>> {
        let acceptor = self.0.lock().unwrap().take();
        Box::pin(async move {
            acceptor
                .map(|a| Box::new(a) as Box<dyn Acceptor>)
                .ok_or_else(|| io::Error::other("bound once"))
        })
    }

    fn address(&self) -> String {
        "scripted".into()
    }
}

/// Connections aborted before they were accepted, and a socket option that
/// could not be set (EINVAL), are accepted past at once; running out of file
/// descriptors waits 10 ms, doubling, and a connection accepted starts the
/// wait over.
#[tokio::test(start_paused = true)]
async fn only_running_out_of_descriptors_slows_accepting_down() {
    let aborted = || Err(io::Error::from(io::ErrorKind::ConnectionAborted));
    let emfile = || Err(io::Error::from_raw_os_error(24));
    let script: VecDeque<io::Result<()>> = vec![
        aborted(),
        aborted(),
        aborted(),
        Err(io::Error::from_raw_os_error(22)), // set_nodelay on a connection already reset
        Err(io::Error::from(io::ErrorKind::ConnectionReset)),
        Ok(()),
        emfile(),
        emfile(),
        emfile(),
        aborted(),
        Ok(()),
        emfile(),
    ]
    .into();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let server = Server::builder(ScriptedBinder(Mutex::new(Some(Scripted {
        script,
        asked: asked.clone(),
        start,
        peers: Vec::new(),
    }))))
    .start();
    let mut events = server.events();
    server.started().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ms: Vec<u128> = asked
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.as_millis())
        .collect();
    // Each entry: when accept was asked for the next connection. The first
    // five failures are of one connection each: no wait. Then three EMFILE:
    // 10, 20, 40 ms; the abort after them waits nothing more (but does not
    // start the wait over); an accepted connection does: EMFILE waits 10 ms.
    assert_eq!(ms, [0, 0, 0, 0, 0, 0, 0, 10, 30, 70, 70, 70, 80], "{ms:?}");
    let mut delays = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let ServerEvent::AcceptFailed { delay, .. } = event {
            delays.push(delay.as_millis());
        }
    }
    assert_eq!(delays, [0, 0, 0, 0, 0, 10, 20, 40, 0, 10]);
    server.stop().await;
}

/// A listener that fails every time is not spun on: after 1,000 failures
/// in a row with no connection accepted, they wait as running out of
/// descriptors does.
#[tokio::test(start_paused = true)]
async fn a_listener_that_always_fails_is_not_spun_on() {
    let script: VecDeque<io::Result<()>> = (0..1_002)
        .map(|_| Err(io::Error::from(io::ErrorKind::ConnectionAborted)))
        .collect();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let server = Server::builder(ScriptedBinder(Mutex::new(Some(Scripted {
        script,
        asked: asked.clone(),
        start: Instant::now(),
        peers: Vec::new(),
    }))))
    .start();
    server.started().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ms: Vec<u128> = asked
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.as_millis())
        .collect();
    assert_eq!(ms.len(), 1_003);
    assert!(ms[..1_001].iter().all(|&t| t == 0), "{:?}", &ms[..1_001]);
    assert_eq!(ms[1_001..], [10, 30]);
    server.stop().await;
}

// ----- Unix listeners -----

#[cfg(unix)]
fn socket_path(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("nmsg-{name}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A server whose socket file was replaced (removed, and another listener
/// bound at the path) leaves the other's file at its stop; one whose file
/// is its own removes it.
#[cfg(unix)]
#[tokio::test]
async fn a_unix_server_removes_only_the_socket_file_it_created() {
    let path = socket_path("replaced");
    let server = Server::unix(&path).start();
    server.started().await.unwrap();
    std::fs::remove_file(&path).unwrap();
    let other = std::os::unix::net::UnixListener::bind(&path).unwrap();
    server.stop().await;
    assert!(
        path.exists(),
        "the stop removed another listener's socket file"
    );
    // The other listener is still reachable through it.
    std::os::unix::net::UnixStream::connect(&path).unwrap();
    drop(other);
    std::fs::remove_file(&path).unwrap();

    let path = socket_path("own");
    let server = Server::unix(&path).start();
    server.started().await.unwrap();
    assert!(path.exists());
    server.stop().await;
    assert!(!path.exists(), "the server left its own socket file");
}

/// The socket file gets the mode asked for, whatever the umask (which would
/// not give group or others write permission, nor take the owner's execute
/// bit); without one, the umask's.
#[cfg(unix)]
#[tokio::test]
async fn a_unix_socket_file_gets_the_mode_asked_for() {
    use std::os::unix::fs::PermissionsExt;
    for mode in [0o600, 0o666] {
        let path = socket_path(&format!("mode{mode:o}"));
        let server = Server::builder(Unix::new(&path).mode(mode)).start();
        server.started().await.unwrap();
        let got = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "{got:o}");
        // A client connects as usual.
        let client = nmsg::Client::unix(&path).start();
        tokio::time::timeout(LIMIT, client.connected())
            .await
            .unwrap();
        client.stop().await;
        server.stop().await;
        assert!(!path.exists());
    }
}
