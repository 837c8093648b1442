//! `nmsg serve ADDR [--echo]`.

use nmsg::{Args, OutArgs, WILDCARD};

use crate::address::{listen, Target};
use crate::output::{items, EventLine, Item, Printer};
use crate::{Failure, Global};

pub(crate) async fn run(global: Global, target: &Target, echo: bool) -> Result<(), Failure> {
    let (server, address) = listen(target, global.codec, global.timeout()).await?;
    let printer = Printer::new();
    server.on_socket(move |socket| {
        let router = socket.router();
        router.on(WILDCARD, move |args: Args| {
            let line = EventLine {
                event: args.get(0).unwrap_or_default(),
                args: items(&args, 1),
            };
            printer.print(&line);
            if echo && args.len() > 1 && args.is_callback(args.len() - 1) {
                answer(&args, line.args);
            }
        });
    });
    eprintln!("nmsg: listening on {address}");
    // Until interrupted.
    std::future::pending::<()>().await;
    Ok(())
}

/// `--echo`: invokes the last argument, a callback, with the data arguments.
fn answer(args: &Args, printed: Vec<Item>) {
    let mut data = OutArgs::new();
    for item in printed {
        if let Item::Data(value) = item {
            data.push(value);
        }
    }
    let echoed = args
        .callback(args.len() - 1)
        .and_then(|callback| callback.call(data));
    if let Err(e) = echoed {
        eprintln!("nmsg: cannot answer `{}`: {e}", args.event().unwrap_or(""));
    }
}
