use std::net::TcpStream;

struct Plain {
    x: u32,
}

#[nmsg::events]
trait Service {
    fn send(&self, plain: Plain, ok: String);
    fn get(&self) -> TcpStream;
    fn try_get(&self) -> Result<u32, Plain>;
    // Inside a callback's arguments too.
    fn nested(&self, reply: nmsg::Callback<(String, Plain)>);
}

fn main() {}
