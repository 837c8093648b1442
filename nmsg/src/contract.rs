//! A checked contract: each `#[nmsg::events]` trait has a canonical schema,
//! a server that serves the trait says what its schema is, and a client
//! compares it with its own before it relies on it.
//!
//! # The schema
//!
//! `<Trait>Client::SCHEMA` is the trait's events with their argument and reply
//! types, as JSON, computed when the trait is compiled:
//!
//! ```text
//! {"trait":"Greeter","events":[
//!   {"event":"div","args":["f64","f64"],"reply":{"ok":"f64","err":"String"}},
//!   {"event":"hello","args":["String"]},
//!   {"event":"ping","args":[],"reply":{"value":"String"}}]}
//! ```
//!
//! (one line, without the whitespace shown here). Events are sorted by their
//! wire name; `args` lists the wire arguments' types (a `Peer` parameter is not
//! one); `reply` is absent for an event without one, `{"value": T}` for
//! `-> T` and `{"ok": T, "err": E}` for `-> Result<T, E>`. A type is written
//! as in the trait, each path shortened to its last segment and whitespace
//! taken out: `nmsg::Callback<(std::string::String,)>` is `Callback<(String,)>`.
//! So a type is compared by how the trait names it: renaming a type, or
//! writing out what an alias stands for, is a difference; a change inside a
//! struct is not (give a changed struct a new name, or a version field). Share
//! the trait between both ends (a crate of its own) and the schemas agree. `<Trait>Client::SCHEMA_HASH` is FNV-1a 64 of the
//! JSON's bytes, as 16 lowercase hex digits: the same on every build of the
//! same trait, and easy to compute in any language.
//!
//! # On the wire
//!
//! `<Trait>Api::register` (and so `serve` and `into_api`) also handles the
//! event `$nmsg.contract:<Trait>` (`<Trait>Client::CONTRACT_EVENT`): called as
//! `emit("$nmsg.contract:Greeter", cb)`, it answers `cb(null, schema)`. Event
//! names starting with [`RESERVED_PREFIX`], `$nmsg.`, are nmsg's own:
//! `#[nmsg::events]` refuses a trait event named so, so they never collide.
//!
//! Beside it, `register` handles [`LIST_EVENT`], `$nmsg.contracts`: called
//! as `emit("$nmsg.contracts", cb)`, it answers `cb(null, ["Greeter", ...])`,
//! the traits whose contract events the router serves at that moment (by its
//! own handlers or its [`Api`](crate::Api)'s), sorted. A tool that knows no
//! trait (the `nmsg describe` command line) asks for the list, then each
//! trait's schema. A peer that does not answer it offers no contract.
//!
//! `<Trait>Client::check_contract().await` emits that event and compares the
//! answer with its own schema. A plain peer (a dynamic router, a Node.js
//! process) does not handle the event, and ignores it: the check then ends
//! after a short timeout ([`DEFAULT_CHECK_TIMEOUT`], 2 s, or the client's
//! `with_timeout`) with [`Verdict::NotOffered`], never a hang.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), nmsg::Error> {
//! use nmsg::contract::Verdict;
//!
//! #[nmsg::events]
//! pub trait Clock {
//!     async fn now(&self) -> u64;
//! }
//! struct Fixed;
//! impl Clock for Fixed {
//!     async fn now(&self) -> u64 { 42 }
//! }
//!
//! let (client, server, _link) = nmsg::transport::memory::pair();
//! ClockApi::new(Fixed).serve(&server);
//! let verdict = ClockClient::new(&client).check_contract().await?;
//! assert!(matches!(verdict, Verdict::Matches { .. }), "{verdict}");
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;

/// The prefix of the event names nmsg keeps for itself: `$nmsg.`.
/// `#[nmsg::events]` refuses trait events whose names start with it.
pub const RESERVED_PREFIX: &str = "$nmsg.";

/// The prefix of a trait's contract event, `$nmsg.contract:`, followed by the
/// trait's name (`<Trait>Client::CONTRACT_EVENT`).
pub const CONTRACT_PREFIX: &str = "$nmsg.contract:";

/// The event on which a router that serves contracts lists them:
/// `$nmsg.contracts`, answered `cb(null, [trait names])`, sorted (see the
/// [module docs](self#on-the-wire)). `<Trait>Api::register` handles it.
pub const LIST_EVENT: &str = "$nmsg.contracts";

/// How long `<Trait>Client::check_contract` gives the peer to send its schema
/// when the client has no `with_timeout` of its own: 2 s (sent as the frame's
/// timeout; the check ends that long after, plus the router's latency
/// allowance, [`DEFAULT_LATENCY_ALLOWANCE`](crate::DEFAULT_LATENCY_ALLOWANCE)
/// unless set). A peer that does not serve the trait never answers, so this is
/// how long it takes to learn that (the answer is [`Verdict::NotOffered`]).
/// The time counts from the call: check once the client is connected.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What `<Trait>Client::check_contract` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The peer's schema is this build's.
    Matches {
        /// The schema's hash (`<Trait>Client::SCHEMA_HASH`).
        hash: String,
    },
    /// The schemas differ, in these ways (sorted by event).
    Differs(Vec<Difference>),
    /// The peer offered no contract for the trait: it did not answer within
    /// the timeout given here. A plain peer (a dynamic router, a Node.js
    /// process), or a server that does not serve this trait.
    NotOffered {
        /// The event that was not answered.
        event: String,
        /// How long the check waited.
        waited: Duration,
    },
}

impl Verdict {
    /// True for [`Verdict::Matches`].
    pub fn matches(&self) -> bool {
        matches!(self, Verdict::Matches { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Matches { hash } => write!(f, "the peer's contract matches (schema {hash})"),
            Verdict::Differs(differences) => {
                write!(
                    f,
                    "the peer's contract differs in {} way{}:",
                    differences.len(),
                    if differences.len() == 1 { "" } else { "s" }
                )?;
                for d in differences {
                    write!(f, "\n- {d}")?;
                }
                Ok(())
            }
            Verdict::NotOffered { event, waited } => write!(
                f,
                "no contract offered: the peer did not answer `{event}` within {waited:?}; \
                 it is a plain peer (dynamic handlers, Node.js), or does not serve this trait"
            ),
        }
    }
}

/// One way the peer's schema differs from this build's. "Here" is this
/// build's trait, "the peer" the schema the peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The schemas are of traits of different names.
    Trait {
        /// This build's trait.
        here: String,
        /// The peer's.
        peer: String,
    },
    /// An event of this build's trait that the peer does not handle.
    MissingEvent {
        /// Its wire name.
        event: String,
    },
    /// An event the peer handles that this build's trait does not have.
    ExtraEvent {
        /// Its wire name.
        event: String,
    },
    /// The event takes another number of arguments.
    ArgumentCount {
        /// Its wire name.
        event: String,
        /// The argument types here.
        here: Vec<String>,
        /// The argument types on the peer.
        peer: Vec<String>,
    },
    /// An argument's type changed.
    ArgumentType {
        /// The event's wire name.
        event: String,
        /// The argument's position.
        index: usize,
        /// Its type here.
        here: String,
        /// Its type on the peer.
        peer: String,
    },
    /// The reply changed: its type, or whether there is one, or whether it
    /// is error-first.
    Reply {
        /// The event's wire name.
        event: String,
        /// The reply here.
        here: Reply,
        /// The reply on the peer.
        peer: Reply,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Trait { here, peer } => {
                write!(f, "trait: `{here}` here, `{peer}` on the peer")
            }
            Difference::MissingEvent { event } => {
                write!(f, "missing event `{event}`: the peer does not handle it")
            }
            Difference::ExtraEvent { event } => {
                write!(f, "extra event `{event}`: the peer handles it, this build's trait has no such event")
            }
            Difference::ArgumentCount { event, here, peer } => write!(
                f,
                "`{event}` takes {} argument{} here ({}), {} on the peer ({})",
                here.len(),
                if here.len() == 1 { "" } else { "s" },
                here.join(", "),
                peer.len(),
                peer.join(", ")
            ),
            Difference::ArgumentType {
                event,
                index,
                here,
                peer,
            } => write!(
                f,
                "`{event}` argument {index} changed type: `{here}` here, `{peer}` on the peer"
            ),
            Difference::Reply { event, here, peer } => {
                write!(
                    f,
                    "`{event}` reply changed: {here} here, {peer} on the peer"
                )
            }
        }
    }
}

/// An event's reply, as the schema states it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    /// `-> Result<T, E>`: `cb(null, value)` or `cb(error)`.
    ErrorFirst {
        /// `T`.
        ok: String,
        /// `E`.
        err: String,
    },
    /// `-> T`: `cb(value)`.
    Value {
        /// `T`.
        value: String,
    },
    /// No reply.
    None,
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::ErrorFirst { ok, err } => write!(f, "`Result<{ok}, {err}>` (error-first)"),
            Reply::Value { value } => write!(f, "`{value}`"),
            Reply::None => f.write_str("no reply"),
        }
    }
}

/// A parsed schema: `<Trait>Client::SCHEMA`, or what a peer sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Schema {
    /// The trait's name.
    #[serde(rename = "trait")]
    pub name: String,
    /// Its events, sorted by wire name.
    pub events: Vec<EventSchema>,
}

/// One event of a [`Schema`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EventSchema {
    /// Its wire name.
    pub event: String,
    /// The wire arguments' types.
    pub args: Vec<String>,
    /// The reply.
    #[serde(default = "no_reply")]
    pub reply: Reply,
}

fn no_reply() -> Reply {
    Reply::None
}

impl Schema {
    /// Parses a schema's JSON.
    pub fn parse(json: &str) -> Result<Schema, Error> {
        serde_json::from_str(json)
            .map_err(|e| Error::argument(1, format!("not an nmsg contract schema: {e}")))
    }

    /// How `peer` differs from `self` (empty when they state the same).
    pub fn compare(&self, peer: &Schema) -> Vec<Difference> {
        let mut out = Vec::new();
        if self.name != peer.name {
            out.push(Difference::Trait {
                here: self.name.clone(),
                peer: peer.name.clone(),
            });
        }
        let theirs = |name: &str| peer.events.iter().find(|e| e.event == name);
        for here in &self.events {
            let Some(there) = theirs(&here.event) else {
                out.push(Difference::MissingEvent {
                    event: here.event.clone(),
                });
                continue;
            };
            if here.args.len() != there.args.len() {
                out.push(Difference::ArgumentCount {
                    event: here.event.clone(),
                    here: here.args.clone(),
                    peer: there.args.clone(),
                });
            } else {
                for (index, (a, b)) in here.args.iter().zip(&there.args).enumerate() {
                    if a != b {
                        out.push(Difference::ArgumentType {
                            event: here.event.clone(),
                            index,
                            here: a.clone(),
                            peer: b.clone(),
                        });
                    }
                }
            }
            if here.reply != there.reply {
                out.push(Difference::Reply {
                    event: here.event.clone(),
                    here: here.reply.clone(),
                    peer: there.reply.clone(),
                });
            }
        }
        for there in &peer.events {
            if !self.events.iter().any(|e| e.event == there.event) {
                out.push(Difference::ExtraEvent {
                    event: there.event.clone(),
                });
            }
        }
        out
    }
}

/// What the generated code calls. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    use super::*;
    use crate::args::{Args, OutArgs};
    use crate::router::Router;
    use crate::typed::HandlerTable;

    /// Handles `event` on `table`: `cb(null, schema)`; and the listing,
    /// [`LIST_EVENT`]: `cb(null, [trait names])`.
    pub fn serve(table: &impl HandlerTable, event: &str, schema: &'static str) {
        table.handle(event, move |args: Args| -> Result<(), Error> {
            trailing_callback(&args, "the schema")?.call(((), schema))
        });
        // The same handler for every trait: it reads the router's routes
        // when asked, so it lists what is served then, from either table.
        table.handle(LIST_EVENT, |args: Args| -> Result<(), Error> {
            let names: Vec<String> = args
                .peer()
                .handled_with_prefix(CONTRACT_PREFIX)
                .into_iter()
                .map(|event| event[CONTRACT_PREFIX.len()..].to_owned())
                .collect();
            trailing_callback(&args, "the list of contracts")?.call(((), names))
        });
    }

    fn trailing_callback(args: &Args, what: &str) -> Result<crate::RemoteCallback, Error> {
        let last = args.len().checked_sub(1).ok_or_else(|| {
            Error::argument(
                0,
                format!("a contract request carries a callback for {what}"),
            )
        })?;
        args.callback(last)
    }

    /// Asks the peer for its schema on `event`, and compares it with `ours`.
    pub fn check(
        router: &Router,
        event: &'static str,
        ours: &'static str,
        timeout: Option<Duration>,
    ) -> impl std::future::Future<Output = Result<Verdict, Error>> + Send + 'static {
        let waited = timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT);
        let answer = router.call::<Args>(event, OutArgs::new(), Some(waited));
        async move {
            let args = match answer?.await {
                Ok(args) => args,
                Err(Error::Timeout(_)) => {
                    return Ok(Verdict::NotOffered {
                        event: event.to_owned(),
                        waited,
                    })
                }
                Err(e) => return Err(e),
            };
            if let Ok(Some(error)) = args.get::<Option<String>>(0) {
                return Err(Error::argument(
                    0,
                    format!("the peer refused to give its contract: {error}"),
                ));
            }
            let theirs: String = args.get(1)?;
            verdict(ours, &theirs)
        }
    }

    /// Compares two schemas' JSON.
    pub fn verdict(ours: &str, theirs: &str) -> Result<Verdict, Error> {
        if ours == theirs {
            return Ok(Verdict::Matches { hash: hash(ours) });
        }
        let here = Schema::parse(ours)?;
        let peer = Schema::parse(theirs)?;
        let differences = here.compare(&peer);
        Ok(if differences.is_empty() {
            // The same statements, written differently (key order, spacing).
            Verdict::Matches { hash: hash(ours) }
        } else {
            Verdict::Differs(differences)
        })
    }
}

/// FNV-1a 64 of `schema`'s bytes, as 16 lowercase hex digits: the hash
/// `<Trait>Client::SCHEMA_HASH` states.
pub fn hash(schema: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in schema.as_bytes() {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv_1a_64() {
        assert_eq!(hash(""), "cbf29ce484222325");
        assert_eq!(hash("foobar"), "85944171f73967e8");
    }

    #[test]
    fn replies_parse_in_each_form() {
        let s = Schema::parse(
            r#"{"trait":"T","events":[{"event":"a","args":[]},{"event":"b","args":["u8"],"reply":{"value":"u8"}},{"event":"c","args":[],"reply":{"ok":"()","err":"String"}}]}"#,
        )
        .unwrap();
        assert_eq!(s.events[0].reply, Reply::None);
        assert_eq!(s.events[1].reply, Reply::Value { value: "u8".into() });
        assert_eq!(
            s.events[2].reply,
            Reply::ErrorFirst {
                ok: "()".into(),
                err: "String".into()
            }
        );
    }
}
