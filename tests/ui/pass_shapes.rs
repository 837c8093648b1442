//! Every method shape the macro accepts, and every option.

use nmsg::{Callback, Peer, Value};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Point {
    x: i32,
    y: i32,
}

/// A service with one method of each shape.
#[nmsg::events(rename_all = "camelCase")]
pub trait Shapes: std::fmt::Debug {
    /// No reply.
    fn note(&self, text: String, point: Point);
    /// Sync reply.
    fn get(&self) -> Vec<u8>;
    /// Async reply.
    async fn fetch(&self, key: String) -> Option<Value>;
    /// Error-first, with and without a value.
    async fn try_fetch(&self, key: String) -> Result<Point, String>;
    fn try_unit(&self) -> std::result::Result<(), Value>;
    /// Callbacks anywhere, nested, with a peer in the middle.
    #[nmsg(event = "pick-hand")]
    fn pick(&self, first: Callback<(u8,)>, peer: Peer, nested: Callback<(Callback<(Callback<(String,)>,)>, Point)>);
    /// A reply that is a callback.
    fn later(&self) -> Callback<(String,)>;
    /// Async without a reply.
    async fn background(&self, _: u32);
    /// A default body.
    async fn with_default(&self, n: u32) -> u32 {
        n + 1
    }
    /// A raw identifier.
    fn r#type(&self) -> String;
}

mod renamed {
    extern crate nmsg as messenger;

    /// The `crate` option, for a renamed dependency.
    #[messenger::events(crate = "messenger")]
    pub trait Renamed {
        fn ping(&self) -> String;
    }
}

#[derive(Debug)]
struct Impl;

impl Shapes for Impl {
    fn note(&self, _text: String, _point: Point) {}
    fn get(&self) -> Vec<u8> {
        vec![1]
    }
    async fn fetch(&self, _key: String) -> Option<Value> {
        None
    }
    async fn try_fetch(&self, _key: String) -> Result<Point, String> {
        Err("none".into())
    }
    fn try_unit(&self) -> Result<(), Value> {
        Ok(())
    }
    fn pick(&self, first: Callback<(u8,)>, _peer: Peer, _nested: Callback<(Callback<(Callback<(String,)>,)>, Point)>) {
        let _ = first.call((1,));
    }
    fn later(&self) -> Callback<(String,)> {
        Callback::new(|(_text,): (String,)| {})
    }
    async fn background(&self, _: u32) {}
    fn r#type(&self) -> String {
        "type".into()
    }
}

struct Pong;
impl renamed::Renamed for Pong {
    fn ping(&self) -> String {
        "pong".into()
    }
}

/// Responses and clients can move to other tasks.
fn assert_send<T: Send + 'static>(_: T) {}

fn main() {
    let router = nmsg::Router::new();
    ShapesApi::new(Impl).serve(&router);
    let _api: nmsg::Api = ShapesApi::new(Impl).into_api();
    renamed::RenamedApi::new(Pong).serve(&router);
    let client = ShapesClient::new(&router).with_timeout(std::time::Duration::from_secs(1));
    let _: Result<(), nmsg::Error> = client.note("x".into(), Point { x: 1, y: 2 });
    let _: nmsg::Response<Vec<u8>> = client.get();
    let _: nmsg::Response<Option<Value>> = client.fetch("k".into());
    let _: nmsg::Response<Result<Point, String>> = client.try_fetch("k".into());
    let _: nmsg::Response<Result<(), Value>> = client.try_unit();
    let _: Result<(), nmsg::Error> = client.pick(
        Callback::new(|(_n,): (u8,)| {}),
        Callback::new(|(_inner, _point): (Callback<(Callback<(String,)>,)>, Point)| {}),
    );
    let _: nmsg::Response<Callback<(String,)>> = client.later();
    let _: Result<(), nmsg::Error> = client.background(1);
    let _: nmsg::Response<u32> = client.with_default(1);
    let _: nmsg::Response<String> = client.r#type();
    assert_eq!(
        ShapesClient::EVENTS,
        ["note", "get", "fetch", "tryFetch", "tryUnit", "pick-hand", "later", "background", "withDefault", "type"]
    );
    let _ = renamed::RenamedClient::new(client.router()).ping();
    assert_send(client.fetch("k".into()));
    assert_send(client.clone());
    assert_send(ShapesApi::new(Impl));
}
