//! The claims of README and docs/ that code can check: the settings example in
//! docs/configuration.md parses and shows the defaults, its deployment example parses, and
//! README names the two commands CI runs.

use mqrs_runtime::Config;

#[test]
fn readme_settings_block_parses_and_matches_the_defaults() {
    let readme = include_str!("../../docs/configuration.md");
    let settings = readme
        .find("## Settings")
        .expect("README has a Settings section");
    let start = settings
        + readme[settings..]
            .find("```toml\n")
            .expect("the Settings section has a TOML block")
        + "```toml\n".len();
    let len = readme[start..].find("```").expect("block ends");
    // The deployment example in "Calls between processes" parses too.
    let example = readme
        .find("[processes.front]")
        .expect("README shows [processes]");
    let end = example + readme[example..].find("```").expect("example ends");
    let c = Config::from_toml(&readme[example..end]).expect("the [processes] example parses");
    assert_eq!(c.process("back").expect("back").modules, ["login"]);
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
