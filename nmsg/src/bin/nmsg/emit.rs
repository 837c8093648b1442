//! `nmsg emit ADDR EVENT [ARG…]`.

use std::io::Read;

use nmsg::{Args, Callback, OutArgs};
use tokio::sync::mpsc;

use crate::address::{connect, Target};
use crate::output::{items, parse_arg, parse_array, CallbackLine, Item, Printer};
use crate::{Failure, Global};

pub(crate) async fn run(
    global: Global,
    target: &Target,
    event: &str,
    raw: &[String],
) -> Result<(), Failure> {
    // The input is read and checked before connecting: bad input sends nothing.
    let given = match raw {
        [dash] if dash == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
            parse_array(&text).map_err(Failure::usage)?
        }
        _ => raw
            .iter()
            .map(|text| parse_arg(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Failure::usage)?,
    };
    let timeout = global.timeout();
    let connection = connect(target, global.codec.router(), timeout).await?;
    let router = connection.router().clone();

    // Each callback sends its index and arguments here; they are printed in
    // the order they arrive.
    let (calls, mut called) = mpsc::unbounded_channel::<CallbackLine>();
    let mut args = OutArgs::new();
    let mut callbacks = 0;
    for item in given {
        match item {
            Item::Data(value) => args.push(value),
            Item::Callback => {
                let calls = calls.clone();
                let index = callbacks;
                args.push(Callback::new(move |received: Args| {
                    let _ = calls.send(CallbackLine {
                        callback: index,
                        args: items(&received, 0),
                    });
                }));
                callbacks += 1;
            }
        }
    }
    // Only the callbacks hold senders now: when the router drops them
    // uninvoked (their timeout, a lost connection), the channel ends.
    drop(calls);

    let deadline = tokio::time::Instant::now() + timeout;
    router
        .emit_with_timeout(event, args, timeout)
        .map_err(|e| Failure::usage(format!("cannot emit `{event}`: {e}")))?;
    if callbacks == 0 {
        // Done once the event is written: a graceful close writes it first.
        return match tokio::time::timeout_at(deadline, connection.close()).await {
            Ok(nmsg::transport::CloseReason::Io { message, .. }) => Err(Failure::failed(format!(
                "`{event}` may not have been written: {message}"
            ))),
            Ok(_) => Ok(()),
            Err(_) => Err(Failure::failed(format!(
                "`{event}` was not written within {timeout:?}"
            ))),
        };
    }

    let printer = Printer::new();
    let mut ran = vec![false; callbacks];
    let mut left = callbacks;
    let outcome = loop {
        tokio::select! {
            call = called.recv() => match call {
                Some(line) => {
                    printer.print(&line);
                    if !std::mem::replace(&mut ran[line.callback], true) {
                        left -= 1;
                    }
                    if left == 0 {
                        break Ok(());
                    }
                }
                None => break Err(not_run(&ran, "the peer did not invoke them before they expired")),
            },
            reason = connection.closed() => {
                // What arrived before the end is printed first.
                while let Ok(line) = called.try_recv() {
                    printer.print(&line);
                    ran[line.callback] = true;
                }
                if ran.iter().all(|r| *r) {
                    break Ok(());
                }
                break Err(not_run(&ran, &format!("the connection ended ({reason})")));
            }
            () = tokio::time::sleep_until(deadline) => {
                break Err(not_run(&ran, &format!("timed out after {timeout:?}")));
            }
        }
    };
    let _ = tokio::time::timeout(timeout, connection.close()).await;
    outcome
}

/// Exit status 1, naming the callbacks that did not run.
fn not_run(ran: &[bool], why: &str) -> Failure {
    let missing: Vec<String> = ran
        .iter()
        .enumerate()
        .filter(|(_, ran)| !**ran)
        .map(|(i, _)| i.to_string())
        .collect();
    Failure::failed(format!(
        "{why}: callback{} {} not invoked",
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", ")
    ))
}
