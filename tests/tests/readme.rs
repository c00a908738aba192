//! The README's claims that code can check: its settings example parses and shows the defaults.

use mqrs_runtime::Config;

#[test]
fn readme_settings_block_parses_and_matches_the_defaults() {
    let readme = include_str!("../../README.md");
    let start = readme.find("```toml\n").expect("README has a TOML block") + "```toml\n".len();
    let len = readme[start..].find("```").expect("block ends");
    let parsed = Config::from_toml(&readme[start..start + len]).expect("README settings parse");
    let d = Config::default();
    assert_eq!(
        format!("{parsed:?}"),
        format!("{d:?}"),
        "README shows the defaults"
    );
}

#[test]
fn readme_names_the_test_command_that_ci_runs() {
    let readme = include_str!("../../README.md");
    let ci = include_str!("../../.ci/run");
    assert!(readme.contains("```sh\ncargo xtask test\n```"));
    assert!(ci.contains("\ncargo xtask test 2>&1"));
    assert!(readme.contains("```sh\ncargo run -p demo\n```"));
    assert!(ci.contains("\ncargo run -q -p demo >"));
}
