//! `nmsg describe ADDR`: the contracts a server offers (`nmsg::contract`).

use std::time::Duration;

use nmsg::contract::{hash, Schema, CONTRACT_PREFIX, DEFAULT_CHECK_TIMEOUT, LIST_EVENT};
use nmsg::{Callback, Router, Value};
use serde::Serialize;

use crate::address::{connect, Target};
use crate::output::{Json, Printer};
use crate::{Failure, Global};

/// One contract as printed.
#[derive(Serialize)]
struct Described<'a> {
    #[serde(rename = "trait")]
    name: &'a str,
    hash: String,
    events: Json<'a>,
}

pub(crate) async fn run(global: Global, target: &Target) -> Result<(), Failure> {
    let connection = connect(target, global.codec.router(), global.timeout()).await?;
    let router = connection.router().clone();
    // A plain peer never answers: wait as long as the contract check does.
    let wait = global.timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT);
    let Some(names) = ask::<Vec<String>>(&router, LIST_EVENT, wait).await? else {
        eprintln!(
            "nmsg: {target} offers no contracts: it did not answer `{LIST_EVENT}` within {wait:?} \
             (a Node.js peer, a server of dynamic handlers only, or one older than the listing)"
        );
        connection.close().await;
        return Ok(());
    };
    if names.is_empty() {
        eprintln!("nmsg: {target} offers no contracts (its list is empty)");
    }
    let printer = Printer::new();
    for name in &names {
        let event = format!("{CONTRACT_PREFIX}{name}");
        let schema: String = ask(&router, &event, wait).await?.ok_or_else(|| {
            Failure::failed(format!(
                "{target} listed the contract `{name}` but did not answer `{event}` within {wait:?}"
            ))
        })?;
        let bad =
            |e: String| Failure::failed(format!("the contract `{name}` is not a schema: {e}"));
        Schema::parse(&schema).map_err(|e| bad(e.to_string()))?;
        let parsed: Value = serde_json::from_str(&schema).map_err(|e| bad(e.to_string()))?;
        let events = parsed["events"].clone();
        printer.print(&Described {
            name,
            hash: hash(&schema),
            events: Json(&events),
        });
    }
    connection.close().await;
    Ok(())
}

/// Emits `event` with a callback and gives what it answers, `cb(null, T)`;
/// `None` when there is no answer within `wait`.
async fn ask<T: serde::de::DeserializeOwned>(
    router: &Router,
    event: &str,
    wait: Duration,
) -> Result<Option<T>, Failure> {
    let (callback, reply) = Callback::<nmsg::Args>::once();
    router
        .emit_with_timeout(event, (callback,), wait)
        .map_err(|e| Failure::failed(format!("cannot emit `{event}`: {e}")))?;
    let answer = match tokio::time::timeout(wait, reply).await {
        Err(_) | Ok(Err(nmsg::Error::Timeout(_))) => return Ok(None),
        Ok(Err(e)) => return Err(Failure::failed(format!("no answer to `{event}`: {e}"))),
        Ok(Ok(answer)) => answer,
    };
    if let Ok(Some(error)) = answer.get::<Option<String>>(0) {
        return Err(Failure::failed(format!("`{event}` was refused: {error}")));
    }
    answer
        .get(1)
        .map(Some)
        .map_err(|e| Failure::failed(format!("`{event}` answered something else: {e}")))
}
