//! The generated code names everything by full path: it compiles without the
//! prelude, and beside user items that share the names it uses.
#![no_implicit_prelude]

extern crate nmsg;

// Items named like what generated code might use unqualified.
#[allow(dead_code)]
struct Result;
#[allow(dead_code)]
struct Arc;
#[allow(dead_code)]
struct Error;
#[allow(dead_code)]
enum Option {
    Some,
    None,
}
#[allow(dead_code)]
trait Future {}
#[allow(dead_code)]
trait Send {}
#[allow(dead_code)]
struct T;

#[nmsg::events]
pub trait Hygienic {
    fn note(&self, text: ::std::string::String);
    async fn ping(&self, __nmsg_args: u32, router: ::std::string::String) -> ::std::string::String;
    fn div(&self, a: f64, b: f64) -> ::core::result::Result<f64, ::std::string::String>;
    fn callback(&self, cb: ::nmsg::Callback<(::nmsg::Callback<(u8,)>,)>, peer: ::nmsg::Peer);
}

struct Impl;

impl Hygienic for Impl {
    fn note(&self, _text: ::std::string::String) {}
    async fn ping(&self, _n: u32, router: ::std::string::String) -> ::std::string::String {
        router
    }
    fn div(&self, a: f64, b: f64) -> ::core::result::Result<f64, ::std::string::String> {
        ::core::result::Result::Ok(a / b)
    }
    fn callback(&self, _cb: ::nmsg::Callback<(::nmsg::Callback<(u8,)>,)>, _peer: ::nmsg::Peer) {}
}

fn main() {
    let router = ::nmsg::Router::new();
    HygienicApi::new(Impl).serve(&router);
    let client = HygienicClient::new(&router);
    let _ = client.note(::std::string::String::new());
    let _ = client.ping(1, ::std::string::String::new());
    let _ = client.div(1.0, 2.0);
}
