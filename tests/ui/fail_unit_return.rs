#[nmsg::events]
trait Service {
    async fn done(&self) -> ();
}

fn main() {}
