//! The examples README shows, run as README says, their output checked
//! against README's own text.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds `examples/NAME.rs` (as `cargo run --example NAME` would) and gives
/// the path of its executable. Built every time, so a changed library or
/// example is never run stale; a no-op when nothing changed.
fn build_example(name: &str) -> PathBuf {
    let output = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--example",
            name,
            "--message-format=json",
        ])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(
        output.status.success(),
        "cargo build --example {name} failed"
    );
    String::from_utf8(output.stdout)
        .expect("cargo's messages are UTF-8")
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo build reported no executable for the example {name}"))
}

/// The lines README shows as the output of `command`: the ```text block that
/// starts with `$ command`, without that line.
fn readme_output(command: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    let start = format!("```text\n$ {command}\n");
    let at = readme
        .find(&start)
        .unwrap_or_else(|| panic!("README.md has no text block starting with `$ {command}`"));
    let block = &readme[at + start.len()..];
    let end = block.find("```").expect("the text block ends");
    block[..end].lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn the_ping_example_prints_the_story_readme_tells() {
    let expected = readme_output("cargo run --example ping");
    assert!(
        !expected.is_empty(),
        "README shows no output of the ping example"
    );

    let exe = build_example("ping");
    let child = tokio::process::Command::new(&exe)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()));
    // The example gives up by itself after 10 s without the ping; this bound
    // only keeps a hung example from hanging the suite (the child is killed
    // when the future is dropped).
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the ping example did not finish within 60 s")
        .expect("wait for the ping example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the ping example failed ({}); stdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        expected,
        "the ping example's output is not README's; stderr:\n{stderr}"
    );
}
