use nmsg::Callback;

#[nmsg::events]
trait Service {
    fn ask(&self, reply: Callback<(String)>);
}

fn main() {}
