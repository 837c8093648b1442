#[nmsg::events]
trait Service {
    fn bump(&mut self) -> u32;
}

fn main() {}
