//! `nmsg listen ADDR [EVENT] [--count N]`.

use nmsg::{Args, WILDCARD};
use tokio::sync::mpsc;

use crate::address::{connect, Target};
use crate::output::{items, EventLine, Printer};
use crate::{Failure, Global};

pub(crate) async fn run(
    global: Global,
    target: &Target,
    only: Option<&str>,
    count: Option<u64>,
) -> Result<(), Failure> {
    let router = global.codec.router();
    let (events, mut received) = mpsc::unbounded_channel::<EventLine>();
    // Set before connecting: nothing the server emits at once is missed.
    // `*` is every event, as no EVENT: the wildcard's own form.
    match only.filter(|event| *event != WILDCARD) {
        Some(event) => {
            let name = event.to_owned();
            router.on(event, move |args: Args| {
                let _ = events.send(EventLine {
                    event: name.clone(),
                    args: items(&args, 0),
                });
            });
        }
        // The wildcard's first argument is the event's name.
        None => {
            router.on(WILDCARD, move |args: Args| {
                let _ = events.send(EventLine {
                    event: args.get(0).unwrap_or_default(),
                    args: items(&args, 1),
                });
            });
        }
    }
    let connection = connect(target, router, global.timeout()).await?;
    let printer = Printer::new();
    let mut seen = 0u64;
    if count == Some(0) {
        connection.close().await;
        return Ok(());
    }
    loop {
        tokio::select! {
            Some(line) = received.recv() => {
                printer.print(&line);
                seen += 1;
                if Some(seen) == count {
                    connection.close().await;
                    return Ok(());
                }
            }
            reason = connection.closed() => {
                while let Ok(line) = received.try_recv() {
                    printer.print(&line);
                    seen += 1;
                    if Some(seen) == count {
                        return Ok(());
                    }
                }
                return Err(Failure::failed(format!("the connection ended: {reason}")));
            }
        }
    }
}
