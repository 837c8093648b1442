#[nmsg::events(rename_all = "kebab_case")]
trait Service {
    fn ping(&self) -> String;
}

fn main() {}
