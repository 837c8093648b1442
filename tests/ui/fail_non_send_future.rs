use std::rc::Rc;

#[nmsg::events]
trait Service {
    async fn ping(&self) -> String;
}

struct Impl;

impl Service for Impl {
    async fn ping(&self) -> String {
        // An `Rc` held across an await makes the future `!Send`.
        let shared = Rc::new("pong".to_string());
        tokio::task::yield_now().await;
        (*shared).clone()
    }
}

fn main() {}
