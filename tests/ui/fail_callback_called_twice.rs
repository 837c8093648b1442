use nmsg::Callback;

#[nmsg::events]
trait Service {
    fn ask(&self, reply: Callback<(String,)>);
}

struct Impl;

impl Service for Impl {
    fn ask(&self, reply: Callback<(String,)>) {
        let _ = reply.call(("once".to_string(),));
        let _ = reply.call(("twice".to_string(),));
    }
}

fn main() {}
