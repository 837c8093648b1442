//! The in-memory transport: two routers linked by an in-process duplex stream,
//! with the same framing as a socket. For tests and examples.

use super::Connection;
use crate::router::Router;

/// Buffer size of each direction of the in-memory stream.
pub const BUFFER_SIZE: usize = 256 * 1024;

/// Links two routers: what one emits, the other receives. Returns the two
/// ends' connections; dropping them does not close the link, calling
/// [`Connection::close`] does.
pub fn link(a: &Router, b: &Router) -> (Connection, Connection) {
    let (x, y) = tokio::io::duplex(BUFFER_SIZE);
    (
        Connection::spawn(x, a.clone()),
        Connection::spawn(y, b.clone()),
    )
}

/// Two new routers with default options, linked.
pub fn pair() -> (Router, Router, (Connection, Connection)) {
    let (a, b) = (Router::new(), Router::new());
    let conns = link(&a, &b);
    (a, b, conns)
}
