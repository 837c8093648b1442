//! Shared by `examples/cost.rs` and `examples/burst.rs`: the `inflight64` load.

use futures_util::stream::{FuturesUnordered, StreamExt};
use nmsg::{args, Error, Router};
use serde_bytes::ByteBuf;

/// Makes `count` calls of `request("echo", [40 bytes])` on `router`, keeping
/// `depth` outstanding (refilled as each completes), and waits for the last.
pub async fn echo_calls(router: &Router, depth: u64, count: u64) -> Result<(), Error> {
    let data = ByteBuf::from(vec![7u8; 40]);
    let call = || router.request::<(ByteBuf,)>("echo", args![data.clone()]);
    let mut outstanding = FuturesUnordered::new();
    let mut sent = 0;
    while sent < depth.min(count) {
        outstanding.push(call());
        sent += 1;
    }
    while let Some(answer) = outstanding.next().await {
        answer?;
        if sent < count {
            outstanding.push(call());
            sent += 1;
        }
    }
    Ok(())
}
