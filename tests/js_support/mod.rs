//! What the tests that run the JavaScript peer of `tests/js` share: where it
//! is, and making sure it can run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

/// The JavaScript peer's folder, `tests/js`.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("js")
}

/// Checks for Node.js 20+ and installs the JavaScript dependencies once
/// (`npm ci` in tests/js) when they are missing; panics, saying why, when
/// that cannot be done. A test never skips itself for want of Node.js.
pub fn js_ready() {
    static INSTALL: Once = Once::new();
    let version = match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => panic!(
            "`node --version` failed ({}): the JavaScript interop tests need Node.js 20+ on PATH",
            out.status
        ),
        Err(e) => panic!(
            "node is not installed ({e}): the JavaScript interop tests need Node.js 20+ on PATH"
        ),
    };
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the Node.js version from {version:?}"));
    assert!(
        major >= 20,
        "Node.js {version} is too old: the JavaScript interop tests need Node.js 20+"
    );
    INSTALL.call_once(|| {
        // Every dependency of package.json: a node_modules left from before one
        // was added gets the new one too.
        let modules = js_dir().join("node_modules");
        let installed = ["@msgpack/msgpack", "msgpack-lite-0.1", "msgpack-lite-0.2"]
            .iter()
            .all(|package| modules.join(package).join("package.json").exists());
        if !installed {
            eprintln!(
                "installing the JavaScript peer's dependencies: npm ci in {}",
                js_dir().display()
            );
            let status = Command::new("npm")
                .args(["ci", "--prefer-offline", "--no-audit", "--no-fund"])
                .current_dir(js_dir())
                .status()
                .expect("npm is not installed");
            assert!(status.success(), "npm ci failed in tests/js");
        }
    });
}
