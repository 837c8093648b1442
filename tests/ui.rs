//! Compile-time behaviour of `#[nmsg::events]`: `tests/ui/pass_*.rs` must
//! compile, `tests/ui/fail_*.rs` must fail with the `.stderr` beside each.
//!
//! The `.stderr` files are produced with `TRYBUILD=overwrite cargo test --test ui`
//! and reviewed by hand: each message must tell the user what to change.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass_*.rs");
    t.compile_fail("tests/ui/fail_*.rs");
}
