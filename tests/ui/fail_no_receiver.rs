#[nmsg::events]
trait Service {
    fn make(name: String) -> u32;
}

fn main() {}
