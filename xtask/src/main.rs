//! Project tasks, run as `cargo xtask <task>` (the alias lives in `.cargo/config.toml`).
//!
//! `cargo xtask test` is README's test command. The integration tests drive real programs that
//! nobody on the team wrote (headless Chromium, mosquitto and `mosquitto_pub`, Eclipse Paho and
//! the OpenTelemetry SDK for Python, MQTT.js for Node), so this task first makes sure they are
//! present, installs what is missing when it can (Debian packages through `apt-get` as root;
//! Python packages into a virtual environment under `target/`, never into the system Python;
//! npm packages into `target/test-env/node`), then runs
//! `cargo test --workspace` with their locations in the environment. When everything is already there it only looks, which takes milliseconds.

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

mod cluster;
mod layers;
mod system;

use system::{apt_install, find_command, target_dir, workspace_root, Failure};

/// A Debian package the tests need, and the command that shows it is installed.
struct Package {
    deb: &'static str,
    command: &'static str,
}

/// What the tests drive: Chromium renders the viewer page, `mosquitto_pub` is a foreign MQTT
/// client, `mosquitto` a standard broker.
const PACKAGES: &[Package] = &[
    Package {
        deb: "chromium",
        command: "chromium",
    },
    Package {
        deb: "mosquitto-clients",
        command: "mosquitto_pub",
    },
    Package {
        deb: "mosquitto",
        command: "mosquitto",
    },
    Package {
        deb: "nodejs",
        command: "node",
    },
    Package {
        deb: "npm",
        command: "npm",
    },
];

/// npm packages the tests drive: MQTT.js, the JavaScript MQTT client browsers and Node use.
const NODE_PACKAGES: &[&str] = &["mqtt@5"];

/// The environment variable that tells the tests where the npm packages are (a
/// `node_modules` folder).
const NODE_VAR: &str = "MQRS_NODE_MODULES";

/// Python packages the tests drive: Eclipse Paho (its callback API v2) as a foreign MQTT
/// client, the OpenTelemetry SDK with its OTLP/HTTP exporter as a foreign trace source, and the
/// Prometheus client's parser as a foreign reader of `/metrics`.
const PYTHON_PACKAGES: &[&str] = &[
    "paho-mqtt>=2,<3",
    "opentelemetry-sdk>=1.20,<2",
    "opentelemetry-exporter-otlp-proto-http>=1.20,<2",
    "prometheus-client>=0.17,<1",
];

/// Imports that show the packages are there.
const PYTHON_CHECK: &str = "import paho.mqtt.client as c, sys; \
from opentelemetry.sdk.trace import TracerProvider; \
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter; \
from prometheus_client.parser import text_string_to_metric_families; \
sys.exit(0 if hasattr(c, 'CallbackAPIVersion') else 1)";

/// The environment variable that tells the tests which Python has the test packages.
const PYTHON_VAR: &str = "MQRS_PYTHON";

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  test [ARGS...]   install what the tests need if missing, then `cargo test --workspace ARGS...`
  setup            only the install step of `test`
  cluster [ARGS...]
                   the demo over a three-node rmqttd cluster on loopback, one node killed and
                   started again under load; installs rmqttd once per machine (about 30
                   minutes cold); ARGS go to `load --cluster` (e.g. --clients 20 --seconds 5)
  layers [DIR]     print each crate's files bottom up (of the checkout in DIR, default this
                   one); fail on an import cycle among files
                   or, at any folder, among its files and sub-folders";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => setup().and_then(|tools| run_tests(&tools, &args[1..])),
        Some("setup") => setup().map(|_| ExitCode::SUCCESS),
        Some("cluster") => cluster::run(&args[1..]),
        Some("layers") => layers::run(
            &args
                .get(1)
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..")),
        )
        .map_err(Failure)
        .map(|ok| {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    };
    result.unwrap_or_else(|Failure(msg)| {
        eprintln!("cargo xtask: {msg}");
        ExitCode::FAILURE
    })
}

/// Where the tests find what they drive besides the Debian packages.
struct Tools {
    /// The Python that has Paho and the OpenTelemetry SDK.
    python: PathBuf,
    /// The `node_modules` folder that has MQTT.js.
    node_modules: PathBuf,
}

/// Makes sure every tool is present.
fn setup() -> Result<Tools, Failure> {
    let missing: Vec<&Package> = PACKAGES
        .iter()
        .filter(|p| find_command(p.command).is_none())
        .collect();
    if !missing.is_empty() {
        let debs: Vec<&str> = missing.iter().map(|p| p.deb).collect();
        apt_install(&debs, &missing_list(&missing), "test")?;
        if let Some(p) = missing.iter().find(|p| find_command(p.command).is_none()) {
            return Err(Failure(format!(
                "`{}` is still not on PATH after installing the Debian package {}",
                p.command, p.deb
            )));
        }
    }
    let python = test_python()?;
    let node_modules = test_node_modules()?;
    println!(
        "cargo xtask: tools ready (chromium, mosquitto, mosquitto_pub, node; Paho, the OpenTelemetry SDK and the Prometheus parser in {}; MQTT.js in {})",
        python.display(),
        node_modules.display()
    );
    Ok(Tools {
        python,
        node_modules,
    })
}

/// The `node_modules` folder with the npm test packages, installing them when missing.
fn test_node_modules() -> Result<PathBuf, Failure> {
    let prefix = target_dir().join("test-env").join("node");
    let modules = prefix.join("node_modules");
    let present = || modules.join("mqtt").join("package.json").is_file();
    if present() {
        return Ok(modules);
    }
    let packages = NODE_PACKAGES.join(" ");
    println!(
        "cargo xtask: installing {packages} into {}",
        prefix.display()
    );
    std::fs::create_dir_all(&prefix)
        .map_err(|e| Failure(format!("cannot create {}: {e}", prefix.display())))?;
    let npm = find_command("npm").ok_or_else(|| Failure("npm is not on PATH".into()))?;
    let status = Command::new(npm)
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&prefix)
        .args(NODE_PACKAGES)
        .status()
        .map_err(|e| Failure(format!("cannot run npm: {e}")))?;
    if !status.success() || !present() {
        return Err(Failure(format!(
            "npm could not install {packages} into {} ({status}); check that the npm registry is reachable and rerun `cargo xtask test`",
            prefix.display()
        )));
    }
    Ok(modules)
}

fn missing_list(missing: &[&Package]) -> String {
    missing
        .iter()
        .map(|p| format!("{} (package {})", p.command, p.deb))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The virtual environment's Python with the test packages installed, creating it when
/// needed.
fn test_python() -> Result<PathBuf, Failure> {
    let venv = target_dir().join("test-env");
    let python = venv.join("bin").join("python");
    if has_packages(&python) {
        return Ok(python);
    }
    if !python.exists() {
        println!(
            "cargo xtask: creating a Python virtual environment in {}",
            venv.display()
        );
        make_venv(&venv)?;
    }
    let packages = PYTHON_PACKAGES.join(" ");
    println!("cargo xtask: installing {packages} into {}", venv.display());
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(PYTHON_PACKAGES)
        .status()
        .map_err(|e| Failure(format!("cannot run {}: {e}", python.display())))?;
    if !status.success() || !has_packages(&python) {
        return Err(Failure(format!(
            "pip could not install {packages} into {} ({status}); check that PyPI is reachable and rerun `cargo xtask test`",
            venv.display()
        )));
    }
    Ok(python)
}

/// True when `python` runs and imports every test package.
fn has_packages(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", PYTHON_CHECK])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// `python3 -m venv`, installing Debian's venv support first when Python lacks it.
fn make_venv(venv: &Path) -> Result<(), Failure> {
    let try_venv = |python: &Path| {
        Command::new(python)
            .args([OsStr::new("-m"), OsStr::new("venv"), OsStr::new("--clear")])
            .arg(venv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(python) = find_command("python3") {
        if try_venv(&python) {
            return Ok(());
        }
    }
    // Debian's own Python ships `venv` in a separate package.
    apt_install(
        &["python3", "python3-venv"],
        "a Python 3 that can create virtual environments (python3 -m venv)",
        "test",
    )?;
    if try_venv(Path::new("/usr/bin/python3")) {
        Ok(())
    } else {
        Err(Failure(format!(
            "`python3 -m venv {}` failed even after installing python3-venv",
            venv.display()
        )))
    }
}

/// Runs `cargo test --workspace` with the tools' locations in the environment.
fn run_tests(tools: &Tools, extra: &[String]) -> Result<ExitCode, Failure> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["test", "--workspace"])
        .args(extra)
        .env(PYTHON_VAR, &tools.python)
        .env(NODE_VAR, &tools.node_modules)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| Failure(format!("cannot run cargo: {e}")))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
