use nmsg::Callback;

#[nmsg::events]
trait Service {
    fn ask(&self, reply: Callback<String>);
}

#[nmsg::events]
trait Deeper {
    // Nested: the first inner callback's arguments are not a tuple.
    fn ask(&self, reply: Callback<(Callback<u32>, Callback<(String,)>)>);
}

fn main() {}
