//! The fuzz targets' inputs, replayed on stable Rust: every file of each
//! target's seed corpus (`fuzz/corpus/TARGET/`) and of the crashes fuzzing
//! found (`fuzz/regressions/TARGET/`) goes through the target's own body
//! (`fuzz/src/lib.rs`, included here), so `cargo test` keeps what fuzzing
//! found fixed. `scripts/fuzz.sh` runs the fuzzer itself.
//!
//! The seeds of the corpus, named for what they are, are written by the
//! ignored tests `write_seed_corpus` (this file: the wire vectors, framing edge
//! cases) and `write_fuzz_seeds` (tests/malformed.rs: its malformed messages):
//! `cargo test --test fuzz_corpus --test malformed -- --ignored`. The files
//! named by a SHA-1 are inputs fuzzing found that reach code the others do not
//! (`scripts/fuzz.sh merge`).

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const FUZZ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");

/// The files of `fuzz/DIR/TARGET/`, by name; none if it does not exist.
fn inputs(dir: &str, target: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(Path::new(FUZZ).join(dir).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every input of `target` through `body`; fails naming each input that
/// panicked, with its first bytes.
fn replay(target: &str, body: fn(&[u8])) {
    let corpus = inputs("corpus", target);
    assert!(
        corpus.len() >= 10,
        "fuzz/corpus/{target} has {} inputs: write it with `cargo test --test fuzz_corpus --test malformed -- --ignored`",
        corpus.len()
    );
    let regressions = inputs("regressions", target);
    let mut failed = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data = fs::read(path).unwrap();
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            let head: String = data.iter().take(32).map(|b| format!("{b:02x}")).collect();
            failed.push(format!(
                "{} ({} bytes: {head}…)",
                path.strip_prefix(FUZZ).unwrap().display(),
                data.len()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs of {target} panic (the panics are above; in fuzz/, rerun one with \
         `cargo +nightly fuzz run {target} PATH`):\n{}",
        failed.len(),
        corpus.len() + regressions.len(),
        failed.join("\n")
    );
}

#[test]
fn the_framing_corpus_replays_without_a_panic() {
    replay("framing", targets::framing);
}

#[test]
fn the_msgpack_message_corpus_replays_without_a_panic() {
    replay("msgpack_message", targets::msgpack_message);
}

#[test]
fn the_json_message_corpus_replays_without_a_panic() {
    replay("json_message", targets::json_message);
}

// ----- the seed corpus -----

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn framed(payloads: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(FUZZ).join("corpus").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), data).unwrap();
}

/// Writes the seeds that come from the wire vectors (`tests/data/wire.json`):
/// each payload for its codec's message target, and for the framing target
/// the framed payloads in several chunkings, with the framing edge cases.
#[test]
#[ignore = "writes fuzz/corpus/; run by hand when the vectors change"]
fn write_seed_corpus() {
    let text =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/wire.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut streams = Vec::new();
    let mut payloads = Vec::new();
    for v in doc["vectors"].as_array().unwrap() {
        let name: String = v["name"]
            .as_str()
            .unwrap()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        if let Some(json) = v["json"].as_str() {
            write("json_message", &format!("wire-{name}"), json.as_bytes());
            payloads.push(json.as_bytes().to_vec());
        }
        if let Some(mp) = v["msgpack_hex"].as_str() {
            write("msgpack_message", &format!("wire-{name}"), &hex(mp));
            payloads.push(hex(mp));
        }
        if let Some(stream) = v["stream_hex"].as_str() {
            streams.push((name, hex(stream)));
        }
    }

    // Framing: each payload framed alone, whole; all of them in one stream,
    // cut in several ways; the edge cases of the length prefix.
    let f = targets::framing_input;
    for (i, p) in payloads.iter().enumerate() {
        write(
            "framing",
            &format!("wire-{i}"),
            &f(255, &[255], &framed(&[p])),
        );
    }
    let all: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
    let all = framed(&all);
    write("framing", "all-whole", &f(255, &[255], &all));
    write("framing", "all-bytewise", &f(255, &[0], &all));
    write(
        "framing",
        "all-in-odd-chunks",
        &f(255, &[2, 0, 6, 30], &all),
    );
    for (name, stream) in &streams {
        write("framing", &format!("stream-{name}"), &f(255, &[0], stream));
    }
    let at_max = framed(&[&[7; 16], b"x"]);
    write("framing", "at-the-max", &f(16, &[3], &at_max));
    write(
        "framing",
        "one-past-the-max",
        &f(16, &[3], &framed(&[&[7; 17]])),
    );
    write(
        "framing",
        "prefix-of-2-gib",
        &f(255, &[0], b"\x7f\xff\xff\xffx"),
    );
    write(
        "framing",
        "prefix-of-16-mib",
        &f(255, &[0], b"\x00\xff\xff\xff\x01"),
    );
    write(
        "framing",
        "zero-length",
        &f(255, &[8], b"\0\0\0\0\0\0\0\x01a"),
    );
    write("framing", "truncated-prefix", &f(255, &[0], b"\0\0"));
    write("framing", "prefix-only", &f(255, &[0], b"\0\0\0\x05"));
    let mut half = framed(&[b"whole", b"half a message"]);
    half.truncate(half.len() - 7);
    write("framing", "truncated-payload", &f(255, &[1, 4], &half));
    write("framing", "empty", &f(255, &[0], b""));

    // Messages of the original's quirks: CESU-8 strings (msgpack-lite 0.1:
    // U+1F600 as two surrogates), integers written as floats, -0, huge
    // numbers; a trailing callback, so they are answered.
    let cesu = [0xa6, 0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80];
    let mut mp = vec![0x84, 0xa1, b'i', 0x01, 0xa1, b'e', 0xa4];
    mp.extend_from_slice(b"ping");
    mp.extend_from_slice(&[0xa1, b'a', 0x95]);
    mp.extend_from_slice(&cesu);
    mp.push(0x81);
    mp.extend_from_slice(&cesu);
    mp.push(0xcb);
    mp.extend_from_slice(&42f64.to_be_bytes());
    mp.push(0xcb);
    mp.extend_from_slice(&(-0f64).to_be_bytes());
    mp.push(0xca);
    mp.extend_from_slice(&3f32.to_be_bytes());
    mp.push(0xcb);
    mp.extend_from_slice(&1e300f64.to_be_bytes());
    mp.extend_from_slice(&[0xa1, b'c', 0x91, 0x05]);
    write("msgpack_message", "quirks-cesu8-and-float-integers", &mp);
    write(
        "json_message",
        "quirks-surrogates-and-float-integers",
        br#"{"i":1,"e":"ping","a":["\ud83d\ude00",{"k":42.0},-0.0,3e0,1e300,9007199254740993],"c":[6]}"#,
    );
}
