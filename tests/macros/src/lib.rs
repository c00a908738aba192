//! Nothing here: the tests are `tests/macro_ui.rs`, the cases `ui/fail` and `ui/pass`.
