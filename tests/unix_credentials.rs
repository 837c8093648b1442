//! Unix sockets: the peer process's credentials reach the socket and its
//! handlers, and `allow_uids` serves only the users it names, refusing the
//! others with the reason in the server's events.
#![cfg(unix)]

use std::time::Duration;

use nmsg::transport::{PeerIdentity, UnixCredentials};
use nmsg::{args, Args, Client, ClientEvent, Error, Server, ServerEvent};

mod tls_support;
use tls_support::TempDir;

const LIMIT: Duration = Duration::from_secs(5);

fn me() -> UnixCredentials {
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    UnixCredentials {
        uid,
        gid,
        pid: Some(std::process::id() as i32),
    }
}

async fn unix_server(
    dir: &TempDir,
    builder: impl FnOnce(nmsg::ServerBuilder) -> nmsg::ServerBuilder,
) -> (Server, std::path::PathBuf) {
    let path = dir.path().join("server.sock");
    let server = builder(Server::unix(&path)).start();
    server.on("whoami", |args: Args| -> Result<(), Error> {
        let identity = args.peer().peer_identity();
        let cred = identity.as_deref().and_then(PeerIdentity::unix).copied();
        args.callback(0)?
            .call((cred.map(|c| (c.uid, c.gid, c.pid)),))
    });
    server.started().await.unwrap();
    (server, path)
}

#[tokio::test]
async fn a_unix_socket_gives_handlers_the_peer_process_uid_gid_and_pid() {
    let dir = TempDir::new("unix-cred");
    let (server, path) = unix_server(&dir, |b| b).await;
    let client = Client::unix(&path).start();
    let (cred,): (Option<(u32, u32, Option<i32>)>,) =
        tokio::time::timeout(LIMIT, client.router().request("whoami", args![]))
            .await
            .unwrap()
            .unwrap();
    let me = me();
    assert_eq!(cred, Some((me.uid, me.gid, me.pid)));
    assert_eq!(
        server.sockets()[0].identity().as_deref(),
        Some(&PeerIdentity::Unix(me))
    );
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn allow_uids_with_this_user_serves_it() {
    let dir = TempDir::new("unix-allow");
    let (server, path) = unix_server(&dir, |b| b.allow_uids([me().uid])).await;
    let client = Client::unix(&path).start();
    let answer = tokio::time::timeout(
        LIMIT,
        client
            .router()
            .request::<(Option<(u32, u32, Option<i32>)>,)>("whoami", args![]),
    )
    .await
    .unwrap();
    assert_eq!(answer.unwrap().0.map(|c| c.0), Some(me().uid));
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn allow_uids_without_this_user_refuses_it_saying_why() {
    let dir = TempDir::new("unix-refuse");
    let other = me().uid.wrapping_add(1);
    let (server, path) = unix_server(&dir, |b| b.allow_uids([other])).await;
    let mut server_events = server.events();
    let client = Client::unix(&path).start();
    let mut events = client.events();
    let reason = tokio::time::timeout(LIMIT, async {
        loop {
            if let ServerEvent::Refused { reason, .. } = server_events.recv().await.unwrap() {
                return reason;
            }
        }
    })
    .await
    .expect("no refusal");
    let uid = me().uid;
    assert!(
        reason.contains(&format!(
            "uid {uid} is not one of the allowed uids [{other}]"
        )),
        "{reason}"
    );
    // The client's connection is closed at once.
    tokio::time::timeout(LIMIT, async {
        loop {
            if let ClientEvent::Disconnected { .. } = events.recv().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("the refused client was not disconnected");
    assert_eq!(server.socket_count(), 0);
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn allow_uids_refuses_peers_without_unix_credentials() {
    let server = Server::tcp("127.0.0.1:0").allow_uids([me().uid]).start();
    let mut server_events = server.events();
    let addr = server.started().await.unwrap();
    let nmsg::transport::Address::Tcp(addr) = addr else {
        panic!()
    };
    let client = Client::tcp(addr.to_string()).start();
    let reason = tokio::time::timeout(LIMIT, async {
        loop {
            if let ServerEvent::Refused { reason, .. } = server_events.recv().await.unwrap() {
                return reason;
            }
        }
    })
    .await
    .expect("no refusal");
    assert!(reason.contains("no Unix credentials"), "{reason}");
    client.stop().await;
    server.stop().await;
}
