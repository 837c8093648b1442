use nmsg::Callback;

#[nmsg::events]
trait Service {
    fn ask(&self, reply: Callback<(String, u32)>);
}

struct Impl;

impl Service for Impl {
    fn ask(&self, reply: Callback<(String, u32)>) {
        let _ = reply.call(("only one".to_string(),));
    }
}

fn main() {}
