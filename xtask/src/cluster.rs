//! `cargo xtask cluster`: the demo over a real three-node MQTT 5 broker cluster on loopback
//! (rmqttd with its raft cluster plugin). Installs rmqttd once per machine (its build's Debian
//! packages, then `cargo install` into `~/.local/share/mqrs/`), builds the demo's release
//! binaries and runs `load --cluster`, which prints the scenario's table. Too slow to build for
//! every CI run, so it is a task of its own.

use std::env;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use crate::system::{apt_install, find_command, target_dir, workspace_root, Failure};

/// The rmqttd release used: its raft cluster plugin, retainer and shared subscriptions are
/// built in.
const RMQTTD_VERSION: &str = "0.24.0";

/// Debian packages rmqttd's build needs (protobuf for its gRPC, cmake and C libraries for
/// its dependencies).
const BUILD_DEBS: &[&str] = &[
    "build-essential",
    "cmake",
    "pkg-config",
    "protobuf-compiler",
    "libssl-dev",
    "zlib1g-dev",
    "libcurl4-openssl-dev",
    "libsasl2-dev",
    "libzstd-dev",
];

/// Installs rmqttd if needed, then runs the scenario with `extra` passed to `load`.
pub fn run(extra: &[String]) -> Result<ExitCode, Failure> {
    let rmqttd = rmqttd()?;
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("cargo xtask: building the demo's release binaries");
    let built = Command::new(&cargo)
        .args(["build", "--release", "-p", "demo", "--bins"])
        .current_dir(workspace_root())
        .status()
        .map_err(|e| Failure(format!("cannot run cargo: {e}")))?;
    if !built.success() {
        return Err(Failure("building the demo failed".into()));
    }
    let load = target_dir().join("release").join("load");
    let status = Command::new(&load)
        .arg("--cluster")
        .arg(&rmqttd)
        .args(extra)
        .status()
        .map_err(|e| Failure(format!("cannot run {}: {e}", load.display())))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// rmqttd of [`RMQTTD_VERSION`]: `MQRS_RMQTTD` when set, else the one installed for mqrs, else
/// installed now.
fn rmqttd() -> Result<PathBuf, Failure> {
    if let Some(p) = env::var_os("MQRS_RMQTTD") {
        return Ok(PathBuf::from(p));
    }
    let home = env::var_os("HOME").ok_or_else(|| Failure("HOME is not set".into()))?;
    let root = PathBuf::from(home)
        .join(".local/share/mqrs")
        .join(format!("rmqttd-{RMQTTD_VERSION}"));
    let bin = root.join("bin").join("rmqttd");
    if bin.is_file() {
        return Ok(bin);
    }
    let missing: Vec<&str> = BUILD_DEBS
        .iter()
        .copied()
        .filter(|d| !deb_installed(d))
        .collect();
    if !missing.is_empty() {
        apt_install(&missing, "rmqttd's build packages", "cluster")?;
    }
    if find_command("protoc").is_none() {
        return Err(Failure(
            "protoc is still missing after installing protobuf-compiler".into(),
        ));
    }
    println!(
        "cargo xtask: installing rmqttd {RMQTTD_VERSION} into {} (once per machine; about 30 minutes cold)",
        root.display()
    );
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let scratch = env::temp_dir().join("mqrs-rmqttd-build");
    let status = Command::new(cargo)
        .args([
            "install",
            "rmqttd",
            "--version",
            RMQTTD_VERSION,
            "--locked",
            "--root",
        ])
        .arg(&root)
        .env("CARGO_TARGET_DIR", &scratch)
        .status()
        .map_err(|e| Failure(format!("cannot run cargo install: {e}")))?;
    let _ = std::fs::remove_dir_all(&scratch);
    if !status.success() || !bin.is_file() {
        return Err(Failure(format!(
            "`cargo install rmqttd --version {RMQTTD_VERSION}` failed; its output above says why"
        )));
    }
    Ok(bin)
}

/// True when Debian package `deb` is installed.
fn deb_installed(deb: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", deb])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}
