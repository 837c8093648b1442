#[nmsg::events]
trait Service {
    fn new(&self, name: String);
    fn router(&self) -> String;
}

fn main() {}
