//! The checked contract of `#[nmsg::events]` traits: a server serves each
//! trait's schema on `$nmsg.contract:<Trait>`, and `check_contract` compares it
//! with the client's own, listing the differences, or says that the peer
//! offers none (without hanging).

mod js_support;

use std::process::Stdio;
use std::time::Duration;

use nmsg::contract::{Difference, Reply, Verdict, DEFAULT_CHECK_TIMEOUT};
use nmsg::transport::memory::pair;
use nmsg::{Args, Callback, Peer};

/// The shop as the client was built.
mod v1 {
    use super::*;

    #[nmsg::events]
    pub trait Shop {
        fn browse(&self, shelf: String);
        async fn price(&self, item: String) -> f64;
        async fn buy(&self, item: String, count: u32) -> Result<u64, String>;
        fn watch(&self, item: String, changed: Callback<(f64,)>, peer: Peer);
        fn close(&self);
    }
}

/// The shop as the server was built, later: `close` is gone, `price` answers
/// in cents, `buy` takes a count of another type, `watch` takes one more
/// argument, and `restock` is new.
mod v2 {
    use super::*;

    #[nmsg::events]
    pub trait Shop {
        fn browse(&self, shelf: String);
        async fn price(&self, item: String) -> u64;
        async fn buy(&self, item: String, count: u64) -> Result<u64, String>;
        fn watch(&self, item: String, changed: Callback<(f64,)>, every: u32);
        fn restock(&self, item: String);
    }

    pub struct Server;

    impl Shop for Server {
        fn browse(&self, _shelf: String) {}
        async fn price(&self, _item: String) -> u64 {
            0
        }
        async fn buy(&self, _item: String, _count: u64) -> Result<u64, String> {
            Ok(0)
        }
        fn watch(&self, _item: String, _changed: Callback<(f64,)>, _every: u32) {}
        fn restock(&self, _item: String) {}
    }
}

struct V1;

impl v1::Shop for V1 {
    fn browse(&self, _shelf: String) {}
    async fn price(&self, _item: String) -> f64 {
        1.5
    }
    async fn buy(&self, _item: String, _count: u32) -> Result<u64, String> {
        Ok(7)
    }
    fn watch(&self, _item: String, _changed: Callback<(f64,)>, _peer: Peer) {}
    fn close(&self) {}
}

#[tokio::test]
async fn a_server_of_the_same_trait_matches() {
    let (client, server, _link) = pair();
    v1::ShopApi::new(V1).serve(&server);
    let verdict = v1::ShopClient::new(&client).check_contract().await.unwrap();
    assert_eq!(
        verdict,
        Verdict::Matches {
            hash: v1::ShopClient::SCHEMA_HASH.to_owned()
        },
        "{verdict}"
    );
    assert_eq!(
        nmsg::contract::hash(v1::ShopClient::SCHEMA),
        v1::ShopClient::SCHEMA_HASH
    );
    // The trait's own events still work beside the contract's.
    assert_eq!(
        v1::ShopClient::new(&client)
            .buy("pen".into(), 1)
            .await
            .unwrap(),
        Ok(7)
    );
}

#[tokio::test]
async fn a_shared_api_serves_the_contract_to_every_socket() {
    let (client, server, _link) = pair();
    server.set_api(Some(v1::ShopApi::new(V1).into_api()));
    let verdict = v1::ShopClient::new(&client).check_contract().await.unwrap();
    assert!(verdict.matches(), "{verdict}");
}

#[tokio::test]
async fn each_kind_of_difference_is_listed() {
    let (client, server, _link) = pair();
    v2::ShopApi::new(v2::Server).serve(&server);
    let verdict = v1::ShopClient::new(&client).check_contract().await.unwrap();
    let s = |x: &str| x.to_owned();
    assert_eq!(
        verdict,
        Verdict::Differs(vec![
            Difference::ArgumentType {
                event: s("buy"),
                index: 1,
                here: s("u32"),
                peer: s("u64"),
            },
            Difference::MissingEvent { event: s("close") },
            Difference::Reply {
                event: s("price"),
                here: Reply::Value { value: s("f64") },
                peer: Reply::Value { value: s("u64") },
            },
            Difference::ArgumentCount {
                event: s("watch"),
                here: vec![s("String"), s("Callback<(f64,)>")],
                peer: vec![s("String"), s("Callback<(f64,)>"), s("u32")],
            },
            Difference::ExtraEvent {
                event: s("restock")
            },
        ])
    );
    let text = verdict.to_string();
    for line in [
        "the peer's contract differs in 5 ways:",
        "- `buy` argument 1 changed type: `u32` here, `u64` on the peer",
        "- missing event `close`: the peer does not handle it",
        "- `price` reply changed: `f64` here, `u64` on the peer",
        "- `watch` takes 2 arguments here (String, Callback<(f64,)>), 3 on the peer (String, Callback<(f64,)>, u32)",
        "- extra event `restock`: the peer handles it",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
}

#[test]
fn a_reply_that_becomes_error_first_or_goes_away_is_a_difference() {
    mod a {
        #[nmsg::events]
        pub trait Door {
            async fn open(&self) -> bool;
            async fn lock(&self) -> bool;
        }
    }
    mod b {
        #[nmsg::events]
        pub trait Door {
            async fn open(&self) -> Result<bool, String>;
            fn lock(&self);
        }
    }
    let verdict =
        nmsg::contract::__private::verdict(a::DoorClient::SCHEMA, b::DoorClient::SCHEMA).unwrap();
    assert_eq!(
        verdict,
        Verdict::Differs(vec![
            Difference::Reply {
                event: "lock".into(),
                here: Reply::Value {
                    value: "bool".into()
                },
                peer: Reply::None,
            },
            Difference::Reply {
                event: "open".into(),
                here: Reply::Value {
                    value: "bool".into()
                },
                peer: Reply::ErrorFirst {
                    ok: "bool".into(),
                    err: "String".into()
                },
            },
        ])
    );
    assert!(verdict.to_string().contains(
        "`open` reply changed: `bool` here, `Result<bool, String>` (error-first) on the peer"
    ));
}

#[tokio::test(start_paused = true)]
async fn a_plain_peer_offers_no_contract_after_the_default_timeout() {
    let (client, server, _link) = pair();
    // A dynamic router that handles the shop's events by hand, not its contract.
    server.on("price", |args: Args| -> Result<(), nmsg::Error> {
        args.callback(1)?.call((1.5,))
    });
    let started = tokio::time::Instant::now();
    let verdict = v1::ShopClient::new(&client).check_contract().await.unwrap();
    assert_eq!(
        verdict,
        Verdict::NotOffered {
            event: "$nmsg.contract:Shop".into(),
            waited: DEFAULT_CHECK_TIMEOUT,
        }
    );
    // The timeout sent to the peer, plus the latency the router allows the answer.
    assert_eq!(
        started.elapsed(),
        DEFAULT_CHECK_TIMEOUT + nmsg::DEFAULT_LATENCY_ALLOWANCE
    );
    assert!(verdict.to_string().starts_with(
        "no contract offered: the peer did not answer `$nmsg.contract:Shop` within 2s"
    ));
}

#[tokio::test(start_paused = true)]
async fn a_server_of_another_trait_offers_none_within_the_clients_timeout() {
    let (client, server, _link) = pair();
    v1::ShopApi::new(V1).serve(&server);
    mod other {
        #[nmsg::events]
        pub trait Shop2 {
            fn browse(&self, shelf: String);
        }
    }
    let verdict = other::Shop2Client::new(&client)
        .with_timeout(Duration::from_millis(300))
        .check_contract()
        .await
        .unwrap();
    assert_eq!(
        verdict,
        Verdict::NotOffered {
            event: "$nmsg.contract:Shop2".into(),
            waited: Duration::from_millis(300),
        }
    );
}

#[test]
fn the_schema_is_canonical_json_and_its_hash_is_pinned() {
    #[nmsg::events(rename_all = "kebab-case")]
    pub trait Clock {
        async fn set_time(&self, at: u64, zone: Option<String>) -> Result<(), String>;
        fn tick(&self, at: u64);
    }
    assert_eq!(
        ClockClient::SCHEMA,
        r#"{"trait":"Clock","events":[{"event":"set-time","args":["u64","Option<String>"],"reply":{"ok":"()","err":"String"}},{"event":"tick","args":["u64"]}]}"#
    );
    // Pinned: a change here is a change of every peer's contract.
    assert_eq!(
        ClockClient::SCHEMA_HASH,
        nmsg::contract::hash(ClockClient::SCHEMA)
    );
    assert_eq!(ClockClient::CONTRACT_EVENT, "$nmsg.contract:Clock");
}

/// The Node.js peer's `Greeter`: `ping` answers `cb("pong")`; `problems`
/// answers with what its protocol layer reported (events it had no handler for).
mod node {
    #[nmsg::events]
    pub trait Greeter {
        async fn ping(&self) -> String;
        async fn problems(&self) -> Vec<String>;
    }
}

#[tokio::test]
async fn a_node_peer_offers_no_contract_and_the_check_does_not_hang() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    js_support::js_ready();
    let mut child = tokio::process::Command::new("node")
        .arg("typed-peer.js")
        .args(["--addr", "127.0.0.1:0", "--codec", "msgpack"])
        .current_dir(js_support::js_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start node typed-peer.js");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line),
    )
    .await
    .expect("typed-peer.js says where it listens")
    .unwrap();
    let addr = line.trim().strip_prefix("LISTENING ").unwrap().to_owned();
    let client = nmsg::Client::tcp(addr).start();
    let greeter =
        node::GreeterClient::new(client.router()).with_timeout(Duration::from_millis(500));
    // The peer is up and serves the trait's events ..
    assert_eq!(greeter.ping().await.unwrap(), "pong");
    // .. but not its contract: no answer, so NotOffered once the timeout is over.
    let verdict = tokio::time::timeout(Duration::from_secs(10), greeter.check_contract())
        .await
        .expect("the check ends by itself")
        .unwrap();
    assert_eq!(
        verdict,
        Verdict::NotOffered {
            event: "$nmsg.contract:Greeter".into(),
            waited: Duration::from_millis(500),
        }
    );
    // The peer saw the request, and dropped it as an event it has no handler for.
    let problems = greeter.problems().await.unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("$nmsg.contract:Greeter")),
        "{problems:?}"
    );
    client.stop().await;
}

#[test]
fn two_spellings_of_a_path_state_the_same_schema() {
    mod long {
        #[nmsg::events]
        pub trait Pad {
            fn tap(&self, at: std::string::String, cb: ::nmsg::Callback<(::std::vec::Vec<u8>,)>);
        }
    }
    mod short {
        use nmsg::Callback;
        #[nmsg::events]
        pub trait Pad {
            fn tap(&self, at: String, cb: Callback<(Vec<u8>,)>);
        }
    }
    assert_eq!(long::PadClient::SCHEMA, short::PadClient::SCHEMA);
    assert_eq!(long::PadClient::SCHEMA_HASH, short::PadClient::SCHEMA_HASH);
}

/// A second trait, to list beside the shop.
mod clock {
    #[nmsg::events]
    pub trait Clock {
        fn now(&self) -> u64;
    }

    pub struct Fixed;

    impl Clock for Fixed {
        fn now(&self) -> u64 {
            42
        }
    }
}

/// What `$nmsg.contracts` answers: `cb(null, names)`.
async fn listed(client: &nmsg::Router) -> Vec<String> {
    let (error, names): (Option<String>, Vec<String>) = client
        .request(nmsg::contract::LIST_EVENT, ())
        .await
        .unwrap();
    assert_eq!(error, None);
    names
}

#[tokio::test]
async fn the_listing_names_every_trait_served_from_either_table_sorted() {
    let (client, server, _link) = pair();
    v1::ShopApi::new(V1).serve(&server);
    assert_eq!(listed(&client).await, ["Shop"]);
    // Registered later and on the shared table: listed too, in name order.
    server.set_api(Some(clock::ClockApi::new(clock::Fixed).into_api()));
    assert_eq!(listed(&client).await, ["Clock", "Shop"]);
    // Each name is one the client can ask the schema of.
    let (error, schema): (Option<String>, String) = client
        .request(&format!("{}Clock", nmsg::contract::CONTRACT_PREFIX), ())
        .await
        .unwrap();
    assert_eq!((error, schema.as_str()), (None, clock::ClockClient::SCHEMA));
    // What is no longer served is no longer listed.
    assert!(server.off(v1::ShopClient::CONTRACT_EVENT));
    assert_eq!(listed(&client).await, ["Clock"]);
}

#[tokio::test(start_paused = true)]
async fn a_plain_peer_does_not_answer_the_listing() {
    let (client, server, _link) = pair();
    server.on("browse", |_: Args| {});
    let answer = client
        .request::<Args>(nmsg::contract::LIST_EVENT, ())
        .await
        .map(|_| ());
    assert!(matches!(answer, Err(nmsg::Error::Timeout(_))), "{answer:?}");
    assert_eq!(server.unhandled_events(), 1);
}
