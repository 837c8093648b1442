//! The `nmsg` command line (`nmsg/src/bin/nmsg`, feature `cli`), run as a
//! user runs it: a process with arguments and stdin, its stdout, stderr and
//! exit status checked, against the conformance server
//! (`cargo run --example conformance -- serve`), against itself (`nmsg
//! serve`), and, for `listen`, against a server in this test that emits.
//!
//! The binary is in the `nmsg` package, and cargo gives a test the path of
//! its own package's binaries only (`CARGO_BIN_EXE_*`); so, as
//! tests/examples.rs does for the examples, the test builds both (`cargo
//! build -p nmsg --features cli --bin nmsg`, `cargo build --example
//! conformance`), once per run, which also means it never runs a stale one.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// A bound on each run, only so that a hung process cannot hang the suite:
/// every run here ends well before it, by its own `--timeout` at worst.
const RUN_BOUND: Duration = Duration::from_secs(60);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds a target with `cargo build ARGS --message-format=json` and gives
/// the path of the executable named `name`.
fn build(args: &[&str], name: &str) -> PathBuf {
    let output = Command::new(env!("CARGO"))
        .arg("build")
        .args(["--quiet", "--message-format=json"])
        .args(args)
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(output.status.success(), "cargo build {args:?} failed");
    String::from_utf8(output.stdout)
        .expect("cargo's messages are UTF-8")
        .lines()
        .filter_map(|line| serde_json::from_str::<Json>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo build {args:?} reported no executable {name}"))
}

fn nmsg_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        build(
            &["-p", "nmsg", "--features", "cli", "--bin", "nmsg"],
            "nmsg",
        )
    })
}

fn conformance_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build(&["--example", "conformance"], "conformance"))
}

// ---------------------------------------------------------------------------
// processes
// ---------------------------------------------------------------------------

/// What a finished run printed, and its exit status.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Asserts the exit status, showing everything printed if it differs.
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{self:#?}");
        self
    }
}

/// Runs `nmsg ARGS` with `stdin` as its input, to its end.
fn nmsg(args: &[&str], stdin: &str) -> Ran {
    let mut child = Command::new(nmsg_exe())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nmsg");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_owned();
    std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + RUN_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for nmsg") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nmsg {args:?} did not exit within {RUN_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ran {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// A process that runs until dropped (a server), its output read line by line.
struct Background {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

impl Background {
    fn start(exe: &Path, args: &[&str]) -> Background {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe:?}: {e}"));
        let lines = |pipe: Box<dyn Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().expect("piped stdout")));
        let stderr = lines(Box::new(child.stderr.take().expect("piped stderr")));
        Background {
            child,
            stdout,
            stderr,
        }
    }

    fn next(lines: &Receiver<String>, what: &str) -> String {
        lines
            .recv_timeout(RUN_BOUND)
            .unwrap_or_else(|e| panic!("no {what}: {e}"))
    }

    fn stdout_line(&self) -> String {
        Background::next(&self.stdout, "line on stdout")
    }

    fn stderr_line(&self) -> String {
        Background::next(&self.stderr, "line on stderr")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The conformance server, and its address.
fn conformance(codec: &str) -> (Background, String) {
    let server = Background::start(
        conformance_exe(),
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--codec",
            codec,
            "--until-eof",
        ],
    );
    let first = server.stdout_line();
    let addr = first
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("the conformance server printed {first:?}"))
        .to_owned();
    (server, addr)
}

/// `nmsg serve ADDR EXTRA...`, and the address it says it listens on.
fn nmsg_serve(addr: &str, extra: &[&str]) -> (Background, String) {
    let mut args = vec!["serve", addr];
    args.extend_from_slice(extra);
    let server = Background::start(nmsg_exe(), &args);
    let first = server.stderr_line();
    let addr = first
        .strip_prefix("nmsg: listening on ")
        .unwrap_or_else(|| panic!("nmsg serve printed {first:?}"))
        .to_owned();
    (server, addr)
}

/// The line README shows as the output of `command`: the ```text block that
/// starts with `$ command`.
fn readme_output(command: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    let start = format!("```text\n$ {command}\n");
    let at = readme
        .find(&start)
        .unwrap_or_else(|| panic!("README.md has no text block starting with `$ {command}`"));
    let block = &readme[at + start.len()..];
    block[..block.find("```").expect("the block ends")]
        .lines()
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------
// emit
// ---------------------------------------------------------------------------

#[test]
fn emit_prints_the_callbacks_arguments_as_the_readme_shows() {
    let (_server, addr) = conformance("msgpack");
    let ran = nmsg(&["emit", &addr, "add", "2", "40", "@cb"], "");
    ran.expect_code(0);
    assert_eq!(ran.stdout, "{\"callback\": 0, \"args\": [42]}\n");
    assert_eq!(ran.stderr, "");
    assert_eq!(
        ran.lines(),
        readme_output("nmsg emit 127.0.0.1:7000 add 2 40 @cb")
    );
}

#[test]
fn emit_speaks_json_with_codec_json() {
    let (_server, addr) = conformance("json");
    let ran = nmsg(
        &["--codec", "json", "emit", &addr, "add", "-2", "40.5", "@cb"],
        "",
    );
    ran.expect_code(0);
    assert_eq!(ran.lines(), ["{\"callback\": 0, \"args\": [38.5]}"]);
}

#[test]
fn each_callback_prints_a_line_and_callbacks_it_receives_print_as_cb() {
    let (_server, addr) = conformance("msgpack");
    // ping(data, err, done): err("This is error message"), then done("pong", inner).
    let ran = nmsg(
        &["emit", &addr, "ping", "{\"key\": \"value\"}", "@cb", "@cb"],
        "",
    );
    ran.expect_code(0);
    assert_eq!(
        ran.lines(),
        [
            "{\"callback\": 0, \"args\": [\"This is error message\"]}",
            "{\"callback\": 1, \"args\": [\"pong\", \"@cb\"]}",
        ]
    );
    // multi(cb0, value, cb2) calls cb2 first: the index is the @cb's, not the order.
    let ran = nmsg(
        &[
            "emit",
            &addr,
            "multi",
            "@cb",
            "{\"b\": 1, \"a\": [null, true]}",
            "@cb",
        ],
        "",
    );
    ran.expect_code(0);
    assert_eq!(
        ran.lines(),
        [
            "{\"callback\": 1, \"args\": [{\"b\": 1, \"a\": [null, true]}]}",
            "{\"callback\": 0, \"args\": [{\"b\": 1, \"a\": [null, true]}]}",
        ]
    );
}

#[test]
fn a_dash_reads_the_arguments_from_stdin() {
    let (_server, addr) = conformance("msgpack");
    let ran = nmsg(
        &["emit", &addr, "echo-text", "-"],
        "[\"h\u{e9}llo \u{1F30D}\", \"@cb\"]\n",
    );
    ran.expect_code(0);
    assert_eq!(
        ran.lines(),
        ["{\"callback\": 0, \"args\": [\"h\u{e9}llo \u{1F30D}\"]}"]
    );
}

#[test]
fn input_that_is_not_json_exits_2_with_a_reason_and_sends_nothing() {
    let (_server, addr) = conformance("msgpack");
    let ran = nmsg(&["emit", &addr, "echo", "hello", "@cb"], "");
    ran.expect_code(2);
    assert_eq!(ran.stdout, "");
    assert_eq!(ran.stderr.lines().count(), 1, "{ran:#?}");
    assert!(
        ran.stderr.starts_with("nmsg: `hello` is not valid JSON"),
        "{ran:#?}"
    );
    let ran = nmsg(&["emit", &addr, "echo", "-"], "{\"not\": \"an array\"}");
    ran.expect_code(2);
    assert!(ran.stderr.contains("not a JSON array"), "{ran:#?}");
    let ran = nmsg(&["emit", &addr, "echo", "-"], "[1,");
    ran.expect_code(2);
    assert!(
        ran.stderr.starts_with("nmsg: stdin is not valid JSON"),
        "{ran:#?}"
    );
}

#[test]
fn no_connection_exits_2_with_a_reason() {
    // A port that was just free, so nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let ran = nmsg(&["emit", &addr, "add", "2", "40", "@cb"], "");
    ran.expect_code(2);
    assert_eq!(ran.stdout, "");
    assert!(
        ran.stderr
            .starts_with(&format!("nmsg: cannot connect to {addr}: ")),
        "{ran:#?}"
    );
    assert_eq!(ran.stderr.lines().count(), 1);
    let ran = nmsg(&["emit", "/tmp/no.sock", "add"], "");
    ran.expect_code(2);
    assert!(ran.stderr.contains("unix:PATH"), "{ran:#?}");
}

#[test]
fn a_callback_not_invoked_in_time_exits_1() {
    let (_server, addr) = conformance("msgpack");
    // The server ignores an event it has no handler for.
    let ran = nmsg(
        &["--timeout", "0.5", "emit", &addr, "no-such-event", "@cb"],
        "",
    );
    ran.expect_code(1);
    assert_eq!(ran.stdout, "");
    assert_eq!(
        ran.stderr,
        "nmsg: timed out after 500ms: callback 0 not invoked\n"
    );
    // One of two runs (add answers its third argument): its line is
    // printed, and the other is named.
    let ran = nmsg(
        &[
            "--timeout",
            "0.5",
            "emit",
            &addr,
            "add",
            "2",
            "40",
            "@cb",
            "@cb",
        ],
        "",
    );
    ran.expect_code(1);
    assert_eq!(ran.lines(), ["{\"callback\": 0, \"args\": [42]}"]);
    assert!(ran.stderr.contains("callback 1 not invoked"), "{ran:#?}");
}

// ---------------------------------------------------------------------------
// serve
// ---------------------------------------------------------------------------

#[test]
fn serve_prints_each_event_and_echo_answers_the_trailing_callback() {
    let (server, addr) = nmsg_serve("127.0.0.1:0", &["--echo"]);
    let ran = nmsg(&["emit", &addr, "echo", "\"hi\"", "5", "@cb"], "");
    ran.expect_code(0);
    assert_eq!(ran.lines(), ["{\"callback\": 0, \"args\": [\"hi\", 5]}"]);
    assert_eq!(
        server.stdout_line(),
        "{\"event\": \"echo\", \"args\": [\"hi\", 5, \"@cb\"]}"
    );
    // Without callbacks, emit exits 0 once the event is written: the server got it.
    let ran = nmsg(&["emit", &addr, "hello", "[1, {\"k\": null}]"], "");
    ran.expect_code(0);
    assert_eq!(ran.stdout, "");
    assert_eq!(
        server.stdout_line(),
        "{\"event\": \"hello\", \"args\": [[1, {\"k\": null}]]}"
    );
}

#[test]
fn serve_without_echo_answers_nothing() {
    let (server, addr) = nmsg_serve("127.0.0.1:0", &[]);
    let ran = nmsg(&["--timeout", "0.5", "emit", &addr, "echo", "1", "@cb"], "");
    ran.expect_code(1);
    assert_eq!(
        server.stdout_line(),
        "{\"event\": \"echo\", \"args\": [1, \"@cb\"]}"
    );
}

#[cfg(unix)]
#[test]
fn serve_and_emit_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("nmsg-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = format!("unix:{}", dir.join("s.sock").display());
    let (server, addr) = nmsg_serve(&path, &["--echo", "--codec", "json"]);
    assert_eq!(addr, path);
    let ran = nmsg(&["--codec", "json", "emit", &addr, "e", "true", "@cb"], "");
    ran.expect_code(0);
    assert_eq!(ran.lines(), ["{\"callback\": 0, \"args\": [true]}"]);
    assert_eq!(
        server.stdout_line(),
        "{\"event\": \"e\", \"args\": [true, \"@cb\"]}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_exits_2_when_it_cannot_listen() {
    let ran = nmsg(&["serve", "192.0.2.1:0"], "");
    ran.expect_code(2);
    assert!(
        ran.stderr
            .starts_with("nmsg: cannot listen on 192.0.2.1:0: "),
        "{ran:#?}"
    );
}

// ---------------------------------------------------------------------------
// describe
// ---------------------------------------------------------------------------

#[test]
fn describe_prints_the_contracts_the_server_offers() {
    let (_server, addr) = conformance("msgpack");
    let ran = nmsg(&["describe", &addr], "");
    ran.expect_code(0);
    let lines = ran.lines();
    assert_eq!(lines.len(), 1, "{ran:#?}");
    let described: Json = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(described["trait"], "Conformance");
    let hash = described["hash"].as_str().unwrap();
    assert!(
        hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hash}"
    );
    let events: Vec<&str> = described["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "echo",
            "echo-text",
            "integers",
            "multi",
            "notify",
            "pick-hand",
            "ping"
        ]
    );
    assert_eq!(
        described["events"][0],
        serde_json::json!({"event": "echo", "args": ["Value"], "reply": {"value": "Value"}})
    );
    // The hash is the schema's, as the server states it.
    let ran = nmsg(&["emit", &addr, "$nmsg.contract:Conformance", "@cb"], "");
    let answer: Json = serde_json::from_str(ran.lines()[0]).unwrap();
    let schema = answer["args"][1].as_str().unwrap();
    assert_eq!(hash, nmsg::contract::hash(schema));
}

#[test]
fn describe_says_plainly_that_a_plain_peer_offers_none() {
    let (_server, addr) = nmsg_serve("127.0.0.1:0", &[]);
    let ran = nmsg(&["--timeout", "0.5", "describe", &addr], "");
    ran.expect_code(0);
    assert_eq!(ran.stdout, "");
    assert_eq!(
        ran.stderr,
        format!(
            "nmsg: {addr} offers no contracts: it did not answer `$nmsg.contracts` within 500ms \
             (a Node.js peer, a server of dynamic handlers only, or one older than the listing)\n"
        )
    );
}

// ---------------------------------------------------------------------------
// listen
// ---------------------------------------------------------------------------

/// A server that, on each connection, emits `tick(1)`, `news("a", cb)`,
/// `tick(2)`, `tick(3)`, then closes it when `close` is set.
fn emitting_server(close: bool) -> (tokio::runtime::Runtime, nmsg::Server, String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (server, addr) = runtime.block_on(async move {
        let server = nmsg::Server::tcp("127.0.0.1:0").start();
        server.on_socket(move |socket| {
            let router = socket.router().clone();
            router.emit("tick", (1,)).unwrap();
            let cb = nmsg::Callback::new(|_: nmsg::Args| {});
            router.emit("news", nmsg::args!["a", cb]).unwrap();
            router.emit("tick", (2,)).unwrap();
            router.emit("tick", (3,)).unwrap();
            if close {
                tokio::spawn(async move {
                    socket.close().await;
                });
            }
        });
        let addr = match server.started().await.unwrap() {
            nmsg::transport::Address::Tcp(addr) => addr.to_string(),
            other => panic!("{other:?}"),
        };
        (server, addr)
    });
    (runtime, server, addr)
}

#[test]
fn listen_prints_every_event_or_only_one_up_to_count() {
    let (_runtime, _server, addr) = emitting_server(false);
    let ran = nmsg(&["listen", &addr, "--count", "2"], "");
    ran.expect_code(0);
    assert_eq!(
        ran.lines(),
        [
            "{\"event\": \"tick\", \"args\": [1]}",
            "{\"event\": \"news\", \"args\": [\"a\", \"@cb\"]}",
        ]
    );
    let ran = nmsg(&["listen", &addr, "tick", "--count", "3"], "");
    ran.expect_code(0);
    assert_eq!(
        ran.lines(),
        [
            "{\"event\": \"tick\", \"args\": [1]}",
            "{\"event\": \"tick\", \"args\": [2]}",
            "{\"event\": \"tick\", \"args\": [3]}",
        ]
    );
}

#[test]
fn listen_exits_1_when_the_server_closes_the_connection() {
    let (_runtime, _server, addr) = emitting_server(true);
    let ran = nmsg(&["listen", &addr, "tick"], "");
    ran.expect_code(1);
    assert_eq!(ran.lines().len(), 3, "{ran:#?}");
    assert_eq!(
        ran.stderr,
        "nmsg: the connection ended: the peer closed the connection\n"
    );
}

#[test]
fn listen_exits_2_when_it_cannot_connect() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ran = nmsg(&["listen", &format!("127.0.0.1:{port}")], "");
    ran.expect_code(2);
    assert!(
        ran.stderr.starts_with("nmsg: cannot connect to "),
        "{ran:#?}"
    );
}

// ---------------------------------------------------------------------------
// completions and help
// ---------------------------------------------------------------------------

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for (shell, mark) in [
        ("bash", "complete -F _nmsg"),
        ("zsh", "#compdef nmsg"),
        ("fish", "complete -c nmsg"),
    ] {
        let ran = nmsg(&["completions", shell], "");
        ran.expect_code(0);
        assert!(
            ran.stdout.contains(mark),
            "{shell}: no {mark:?} in\n{}",
            ran.stdout
        );
        for command in ["emit", "listen", "serve", "describe"] {
            assert!(ran.stdout.contains(command), "{shell}: no {command}");
        }
    }
}

#[test]
fn help_documents_the_output_and_the_exit_status() {
    let ran = nmsg(&["--help"], "");
    ran.expect_code(0);
    assert!(ran
        .stdout
        .contains("$ nmsg emit 127.0.0.1:7000 add 2 40 @cb\n  {\"callback\": 0, \"args\": [42]}"));
    assert!(ran.stdout.contains("Exit status: 0 done, 1 timed out"));
    // A bad address is a usage error, as clap reports them: 2.
    let ran = nmsg(&["emit", "nowhere", "e"], "");
    ran.expect_code(2);
}

// ---------------------------------------------------------------------------
// a terminal
// ---------------------------------------------------------------------------

/// Runs `nmsg ARGS` with its stdout on a pseudo-terminal, and gives what it
/// wrote there (the terminal writes each newline as "\r\n").
#[cfg(unix)]
fn nmsg_on_a_terminal(args: &[&str]) -> (Option<i32>, String) {
    use std::fs::File;
    use std::os::fd::FromRawFd;

    // SAFETY: plain libc calls on descriptors this function owns; each
    // result is checked before use, and each descriptor goes into a File.
    let (mut terminal, screen) = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0, "posix_openpt failed");
        assert_eq!(libc::grantpt(master), 0, "grantpt failed");
        assert_eq!(libc::unlockpt(master), 0, "unlockpt failed");
        let name = libc::ptsname(master);
        assert!(!name.is_null(), "ptsname failed");
        let slave = libc::open(name, libc::O_RDWR | libc::O_NOCTTY);
        assert!(slave >= 0, "cannot open the terminal's other end");
        (File::from_raw_fd(master), File::from_raw_fd(slave))
    };
    let mut child = Command::new(nmsg_exe())
        .args(args)
        .stdin(Stdio::null())
        .stdout(screen)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nmsg");
    // The child holds the only other end now: reading ends (EIO) when it exits.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = terminal.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).replace("\r\n", "\n")
    });
    let deadline = Instant::now() + RUN_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for nmsg") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nmsg {args:?} did not exit within {RUN_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.code(), reader.join().unwrap())
}

#[cfg(unix)]
#[test]
fn on_a_terminal_the_output_is_pretty_printed() {
    let (_server, addr) = conformance("msgpack");
    let (code, screen) = nmsg_on_a_terminal(&["emit", &addr, "add", "2", "40", "@cb"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        screen,
        "{\n  \"callback\": 0,\n  \"args\": [\n    42\n  ]\n}\n"
    );
}
