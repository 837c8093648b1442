#[nmsg::events]
trait Service {
    fn consume(self, text: String);
}

fn main() {}
