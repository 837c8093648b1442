#[nmsg::events(rename = "camelCase")]
trait Service {
    #[nmsg(evnt = "ping")]
    fn ping(&self) -> String;
    #[nmsg(event = "a", event = "b")]
    fn twice(&self);
}

fn main() {}
