//! `nmsg`: talk to a live nmsg peer from the command line (like `grpcurl`,
//! `nats pub/sub/req` or `redis-cli` for their protocols). Built with the
//! `cli` feature: `cargo run -p nmsg --features cli --bin nmsg -- --help`.
//!
//! Layout: `main.rs` the command line (clap's derive API) and the exit codes;
//! `address.rs` addresses, connecting and binding; `output.rs` how values,
//! callbacks and lines are printed; one file per command.

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

mod address;
mod describe;
mod emit;
mod listen;
mod output;
mod serve;

use address::Target;

/// Exit status: the callbacks did not all run in time, or the connection ended first.
const EXIT_FAILED: u8 = 1;
/// Exit status: bad input (not JSON, a bad address) or no connection.
const EXIT_USAGE: u8 = 2;

/// How long a command waits when `--timeout` is not given.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

const EXAMPLES: &str = "\
Examples (against `cargo run --example conformance -- serve --addr 127.0.0.1:7000`):
  $ nmsg emit 127.0.0.1:7000 add 2 40 @cb
  {\"callback\": 0, \"args\": [42]}
  $ nmsg emit 127.0.0.1:7000 echo '{\"a\": [1, \"two\"]}' @cb
  {\"callback\": 0, \"args\": [{\"a\": [1, \"two\"]}]}
  $ echo '[\"hi\", \"@cb\"]' | nmsg emit 127.0.0.1:7000 echo-text -
  {\"callback\": 0, \"args\": [\"hi\"]}
  $ nmsg describe 127.0.0.1:7000
  $ nmsg serve 127.0.0.1:7001 --echo
  $ nmsg listen unix:/tmp/app.sock tick --count 3
  $ nmsg completions bash > /etc/bash_completion.d/nmsg

Addresses are HOST:PORT or unix:PATH. Output is pretty-printed JSON on a
terminal, and one JSON object per line otherwise (as above: \", \" and \": \"
between items). Exit status: 0 done, 1 timed out (or the connection ended
first), 2 bad input or no connection, with a one-line reason on stderr.";

/// Talk to a live nmsg peer: emit events, listen, serve, read its contracts.
#[derive(Debug, Parser)]
#[command(name = "nmsg", version, after_long_help = EXAMPLES)]
struct Cli {
    /// How messages are encoded on the wire; both ends must agree.
    #[arg(long, global = true, value_enum, default_value_t = CodecName::Msgpack)]
    codec: CodecName,

    /// Seconds to wait: to connect, and for `emit`'s callbacks to run
    /// [default: 15; `describe`: 2, for the listing of contracts].
    #[arg(long, global = true, value_name = "SECS", value_parser = seconds)]
    timeout: Option<Duration>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CodecName {
    /// MessagePack, as the Node.js nmsg writes by default.
    Msgpack,
    /// JSON.
    Json,
}

impl CodecName {
    /// `options` with this codec.
    fn apply(self, options: nmsg::RouterBuilder) -> nmsg::RouterBuilder {
        match self {
            CodecName::Msgpack => options.codec(nmsg::MsgPack),
            CodecName::Json => options.codec(nmsg::Json),
        }
    }

    /// A client's router.
    fn router(self) -> nmsg::Router {
        self.apply(nmsg::Router::builder()).build()
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect, emit EVENT with ARGs, and print each callback invocation.
    ///
    /// Each ARG is a JSON value (quote strings: '"text"'); the bare word @cb
    /// stands for a callback. Each time the peer invokes one, a line
    /// {"callback": N, "args": [...]} is printed, N being the callback's index
    /// among the @cbs (from 0); callbacks the peer passes in args print as
    /// "@cb". `-` as the only ARG reads the arguments from stdin, as a JSON
    /// array in which the string "@cb" stands for a callback.
    ///
    /// Exits 0 once every callback has run (at once, when there are none,
    /// once the event is written), 1 when the timeout passes first (or the
    /// connection ends first), 2 when it cannot connect or an ARG is not JSON.
    Emit {
        /// HOST:PORT or unix:PATH.
        addr: Target,
        /// The event's name.
        event: String,
        /// JSON values, @cb for a callback, or `-` to read a JSON array from stdin.
        #[arg(value_name = "ARG", allow_negative_numbers = true)]
        args: Vec<String>,
    },
    /// Connect and print every event the server emits to this client.
    ///
    /// One line each: {"event": NAME, "args": [...]}, callbacks as "@cb" (not
    /// invoked). Runs until interrupted, or until --count events; exits 1 if
    /// the server closes the connection first, 2 if it cannot connect.
    Listen {
        /// HOST:PORT or unix:PATH.
        addr: Target,
        /// Print only this event.
        event: Option<String>,
        /// Exit 0 after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Listen for clients and print every event they emit.
    ///
    /// One line each: {"event": NAME, "args": [...]}, callbacks as "@cb".
    /// Prints "nmsg: listening on ADDR" on stderr first (the real port, for
    /// port 0). Runs until interrupted; exits 2 if it cannot listen.
    Serve {
        /// HOST:PORT (port 0: any free port) or unix:PATH.
        addr: Target,
        /// Answer every event whose last argument is a callback by invoking
        /// it with the event's data arguments.
        #[arg(long)]
        echo: bool,
    },
    /// Print the contracts the server offers (#[nmsg::events] traits).
    ///
    /// Asks for the list ($nmsg.contracts), then each trait's schema
    /// ($nmsg.contract:<Trait>), and prints one object per trait: {"trait":
    /// NAME, "hash": SCHEMA_HASH, "events": [...]}. A server that does not
    /// answer the listing within the timeout (2 s unless --timeout is given)
    /// offers none: a Node.js peer, a server of dynamic handlers only, or one
    /// from before the listing. That is said on stderr, with exit status 0.
    Describe {
        /// HOST:PORT or unix:PATH.
        addr: Target,
    },
    /// Print a shell completion script.
    ///
    /// bash: `nmsg completions bash > /etc/bash_completion.d/nmsg`;
    /// zsh: into a directory of $fpath as `_nmsg`;
    /// fish: `nmsg completions fish > ~/.config/fish/completions/nmsg.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `--timeout`: positive seconds, fractions allowed.
fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("the timeout must be more than 0 seconds, got {text}"))
}

/// What every command is given besides its own arguments.
#[derive(Debug, Clone, Copy)]
struct Global {
    codec: CodecName,
    timeout: Option<Duration>,
}

impl Global {
    fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let global = Global {
        codec: cli.codec,
        timeout: cli.timeout,
    };
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "nmsg", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(EXIT_USAGE, format!("cannot start the runtime: {e}")),
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Emit { addr, event, args } => emit::run(global, &addr, &event, &args).await,
            Command::Listen { addr, event, count } => {
                listen::run(global, &addr, event.as_deref(), count).await
            }
            Command::Serve { addr, echo } => serve::run(global, &addr, echo).await,
            Command::Describe { addr } => describe::run(global, &addr).await,
            Command::Completions { .. } => unreachable!("handled above"),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, reason }) => fail(code, reason),
    }
}

/// Why a command did not succeed: its exit status and a one-line reason.
#[derive(Debug)]
struct Failure {
    code: u8,
    reason: String,
}

impl Failure {
    /// Exit status 1: timed out, or the connection ended first.
    fn failed(reason: impl Into<String>) -> Self {
        Failure {
            code: EXIT_FAILED,
            reason: reason.into(),
        }
    }

    /// Exit status 2: bad input, or no connection.
    fn usage(reason: impl Into<String>) -> Self {
        Failure {
            code: EXIT_USAGE,
            reason: reason.into(),
        }
    }
}

fn fail(code: u8, reason: String) -> ExitCode {
    eprintln!("nmsg: {reason}");
    ExitCode::from(code)
}
