// Every problem is reported in one go.
#[nmsg::events]
trait Service {
    fn a(self);
    fn b<T>(&self, t: T);
    fn clone(&self);
    #[nmsg(event = "a")]
    fn d(&self, text: &String);
    fn e(&self, x: nmsg::Peer, y: nmsg::Peer);
}

fn main() {}
