//! What the benchmark binaries (`load`, `hostile`) share: the demo started as a process of its
//! own beside them, its resident memory, and medians.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A demo process started by a benchmark; stopped (SIGINT) when dropped.
pub struct DemoProcess {
    child: Child,
    /// The gate's address, `host:port`.
    pub gate: String,
    /// The viewer's address, `host:port`.
    pub viewer: String,
    /// The OTLP collector's address, `host:port`.
    pub collector: String,
    /// The embedded broker's address, `host:port`, when it runs one.
    pub broker: Option<String>,
    /// The gate's MQTT over WebSocket address, `host:port`, when it runs a gate.
    pub ws: Option<String>,
}

impl DemoProcess {
    /// Starts the `demo` binary that sits next to the running one, on free loopback ports,
    /// with `args` added (without `--broker` among them, it runs no broker); waits until it
    /// listens.
    pub fn start(args: &[&str]) -> Result<DemoProcess, String> {
        let exe = std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("demo");
        let mut child = Command::new(&exe)
            .args(["--gate", "127.0.0.1:0", "--ws", "127.0.0.1:0"])
            .args(["--viewer", "127.0.0.1:0"])
            .args([
                "--collector",
                "127.0.0.1:0",
                "--broker-listen",
                "127.0.0.1:0",
            ])
            .args(if args.contains(&"--broker") {
                &[][..]
            } else {
                &["--broker", "none"][..]
            })
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e} (build it: cargo build --release -p demo --bins)",
                    exe.display()
                )
            })?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut gate, mut viewer, mut collector, mut broker) = (None, None, None, None);
        let mut ws = None;
        while gate.is_none() || viewer.is_none() || collector.is_none() {
            let Some(Ok(l)) = lines.next() else {
                let _ = child.kill();
                return Err("the demo exited before listening".into());
            };
            if let Some(a) = l.split("gate listening on mqtt://").nth(1) {
                gate = Some(a.trim().to_string());
            }
            if let Some(a) = l.split("gate listening on ws://").nth(1) {
                ws = Some(a.trim().trim_end_matches("/mqtt").to_string());
            }
            if let Some(a) = l.split("trace viewer on http://").nth(1) {
                viewer = Some(a.trim().trim_end_matches('/').to_string());
            }
            if let Some(a) = l.split("OTLP collector on http://").nth(1) {
                collector = Some(a.trim().trim_end_matches("/v1/traces").to_string());
            }
            if let Some(a) = l.split("embedded MQTT broker on mqtt://").nth(1) {
                broker = Some(a.trim().to_string());
            }
        }
        // Keep reading its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(DemoProcess {
            child,
            gate: gate.unwrap_or_default(),
            viewer: viewer.unwrap_or_default(),
            collector: collector.unwrap_or_default(),
            broker,
            ws,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// CPU time (user and system) the process `pid` has used so far, in seconds; Linux only.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: utime and
    // stime are the 12th and 13th of them, in clock ticks (USER_HZ, 100 on Linux).
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// The median of `v` (mean of the middle two for an even count); `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}
