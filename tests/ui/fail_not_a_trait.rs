#[nmsg::events]
struct Service {
    name: String,
}

fn main() {}
