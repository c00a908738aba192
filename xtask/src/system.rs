//! What the tasks need from the machine: Debian packages through `apt-get`, commands on
//! `PATH`, whether this runs as root, and the workspace's folders.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A step failed; the message is one line saying what is missing and how to fix it.
pub struct Failure(pub String);

/// Installs Debian packages, or explains in one line why it cannot.
pub fn apt_install(debs: &[&str], what: &str, task: &str) -> Result<(), Failure> {
    let how = format!(
        "install them with `apt-get install -y {}` as root, then rerun `cargo xtask {task}`",
        debs.join(" ")
    );
    if find_command("apt-get").is_none() {
        return Err(Failure(format!(
            "missing {what}, and this machine has no apt-get; {how} or your system's equivalent"
        )));
    }
    if !is_root() {
        return Err(Failure(format!(
            "missing {what}, and installing needs root; {how}"
        )));
    }
    println!("cargo xtask: installing {} with apt-get", debs.join(" "));
    let apt = |args: &[&str]| -> Result<(), Failure> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| Failure(format!("cannot run apt-get: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(Failure(format!(
                "`apt-get {}` failed ({status}); {how}",
                args.join(" ")
            )))
        }
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend_from_slice(debs);
    apt(&install)
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The workspace's target folder (`CARGO_TARGET_DIR` when set).
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(d) => workspace_root().join(d),
        None => workspace_root().join("target"),
    }
}

/// Looks `name` up on PATH and in the system binary folders (mosquitto lives in /usr/sbin,
/// which a non-root PATH may lack).
pub fn find_command(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// True when this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
