#[nmsg::events]
trait Service {
    fn hello(&self, name: &str, bytes: &[u8]);
    fn get(&self) -> Vec<&'static str>;
}

fn main() {}
