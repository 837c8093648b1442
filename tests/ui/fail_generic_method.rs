#[nmsg::events]
trait Service {
    fn store<T: serde::Serialize>(&self, value: T);
}

fn main() {}
