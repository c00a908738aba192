//! Compile-time behaviour of `#[rpc_module]` and `#[rpc]`: misuse is an error that points at
//! the offending tokens (reviewed `.stderr` files), and every supported handler shape compiles.

#[test]
fn macro_ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*.rs");
    t.pass("ui/pass/*.rs");
}
