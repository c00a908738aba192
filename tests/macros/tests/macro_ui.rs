//! Compile-time behaviour of `#[rpc_module]` and `#[rpc]`: misuse is an error that points at
//! the offending tokens (reviewed `.stderr` files), and every supported handler shape compiles.

#[test]
fn macro_ui() {
    // trybuild builds its scratch project, dependencies and all, in its own target directory
    // with the default dev profile (it does not read the workspace's profiles). Full debug
    // info there came to about 3 GiB; the errors under test do not need it.
    if std::env::var_os("CARGO_PROFILE_DEV_DEBUG").is_none() {
        std::env::set_var("CARGO_PROFILE_DEV_DEBUG", "false");
    }
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*.rs");
    t.pass("ui/pass/*.rs");
}
