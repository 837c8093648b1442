use nmsg::Callback;

#[nmsg::events]
trait Service {
    fn ask(&self, reply: Callback<(String,)>);
}

fn main() {
    let router = nmsg::Router::new();
    let client = ServiceClient::new(&router);
    // The closure takes a number where the trait says a string.
    let _ = client.ask(Callback::new(|(n,): (u32,)| println!("{n}")));
}
