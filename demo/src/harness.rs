//! What the benchmark binaries (`load`, `hostile`) share: the demo started as a process of its
//! own beside them, its resident memory, medians, and a self-signed certificate for TLS.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use tokio_rustls::rustls::{ClientConfig, RootCertStore};

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
    /// The gate's MQTT over TLS address, `host:port`, when TLS is on.
    pub tls: Option<String>,
}

impl DemoProcess {
    /// Starts the `demo` binary that sits next to the running one, on free loopback ports,
    /// with `args` added (without `--broker` among them, it runs no broker); waits until it
    /// listens.
    pub fn start(args: &[&str]) -> Result<DemoProcess, String> {
        Self::spawn(args, false)
    }

    /// Starts a demo process that runs modules without a gate, viewer or collector (`args`
    /// name them with `--modules` and give `--broker`); waits until it has connected to the
    /// broker and its modules are ready. Its address fields are empty.
    pub fn start_modules(args: &[&str]) -> Result<DemoProcess, String> {
        Self::spawn(args, true)
    }

    fn spawn(args: &[&str], modules_only: bool) -> Result<DemoProcess, String> {
        let exe = std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("demo");
        Self::start_at(&exe, args, modules_only)
    }

    /// An instance of `modules` as server `id` on the broker (or cluster nodes) `broker`,
    /// its spans sent by OTLP to `otlp` ([`DemoProcess::start_modules`]).
    pub fn start_instance(
        modules: &str,
        id: &str,
        broker: &str,
        otlp: &str,
    ) -> Result<DemoProcess, String> {
        Self::start_modules(&[
            "--modules",
            modules,
            "--broker",
            broker,
            "--server-id",
            id,
            "--otlp",
            otlp,
        ])
    }

    /// As [`DemoProcess::start`] (or [`DemoProcess::start_modules`] when `modules_only`), with
    /// the `demo` binary at `exe` (a test names it with `env!("CARGO_BIN_EXE_demo")`).
    pub fn start_at(
        exe: &std::path::Path,
        args: &[&str],
        modules_only: bool,
    ) -> Result<DemoProcess, String> {
        let mut child = Command::new(exe)
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
            .env(
                "RUST_LOG",
                std::env::var("DEMO_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(log_file().map_or_else(Stdio::null, Stdio::from))
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
        let (mut ws, mut tls) = (None, None);
        let (mut connected, mut ready) = (false, false);
        let waiting = |g: &Option<String>, v: &Option<String>, c: &Option<String>, b, r| {
            if modules_only {
                !(b && r)
            } else {
                g.is_none() || v.is_none() || c.is_none()
            }
        };
        while waiting(&gate, &viewer, &collector, connected, ready) {
            let Some(Ok(l)) = lines.next() else {
                let _ = child.kill();
                return Err("the demo exited before listening".into());
            };
            if let Some(a) = l.split("gate listening on mqtt://").nth(1) {
                gate = Some(a.trim().to_string());
            }
            for scheme in ["ws", "wss"] {
                if let Some(a) = l.split(&format!("gate listening on {scheme}://")).nth(1) {
                    ws = Some(a.trim().trim_end_matches("/mqtt").to_string());
                }
            }
            if let Some(a) = l.split("gate listening on mqtts://").nth(1) {
                tls = Some(a.trim().to_string());
            }
            if let Some(a) = l.split("trace viewer on http://").nth(1) {
                viewer = Some(a.trim().trim_end_matches('/').to_string());
            }
            if let Some(a) = l.split("OTLP collector on http://").nth(1) {
                collector = Some(a.trim().trim_end_matches("/v1/traces").to_string());
            }
            connected |= l.contains("connected to the MQTT broker");
            ready |= l.contains("modules ready");
            if let Some(a) = l.split("embedded MQTT broker on mqtt://").nth(1) {
                broker = Some(a.trim().to_string());
            }
        }
        // Keep reading its log so it never blocks on a full pipe.
        let mut keep = log_file();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(f) = &mut keep {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
            }
        });
        Ok(DemoProcess {
            child,
            gate: gate.unwrap_or_default(),
            viewer: viewer.unwrap_or_default(),
            collector: collector.unwrap_or_default(),
            broker,
            ws,
            tls,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with SIGTERM, as a deployment does, and waits until it has exited.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Kills it with SIGKILL, as a crash would (no clean stop, no presence withdrawn), and
    /// waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `DEMO_LOG_DIR=dir` set, a new file in `dir` for a started demo's log (to see why a
/// process started by a benchmark or test behaved as it did); otherwise none. Its level is
/// `DEMO_RUST_LOG` (a `RUST_LOG` filter), `info` by default.
fn log_file() -> Option<std::fs::File> {
    let dir = std::env::var_os("DEMO_LOG_DIR")?;
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::path::Path::new(&dir).join(format!("demo-{}-{n}.log", std::process::id()));
    std::fs::File::create(path).ok()
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// GET `path` from the HTTP server at `addr` (`host:port`, a demo's viewer) as HTTP/1.0, so
/// the body comes whole with its length, never in chunks: the status and the JSON body
/// (`Null` when the body is not JSON).
pub fn http_get_json(addr: &str, path: &str) -> Result<(u16, serde_json::Value), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no HTTP status")?;
    Ok((
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    ))
}

/// The names of the SERVER spans of trace `id` (hex) that the viewer at `viewer` holds, from
/// its Jaeger API; empty when it holds none.
pub fn server_spans(viewer: &str, id: &str) -> Vec<String> {
    let v = match http_get_json(viewer, &format!("/api/traces/{id}")) {
        Ok((200, v)) => v,
        _ => return Vec::new(),
    };
    let is_server = |s: &&serde_json::Value| {
        s["tags"].as_array().is_some_and(|t| {
            t.iter()
                .any(|t| t["key"] == "span.kind" && t["value"] == "server")
        })
    };
    v["data"][0]["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(is_server)
        .filter_map(|s| s["operationName"].as_str().map(str::to_string))
        .collect()
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
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU time (user and system) the threads of process `pid` whose name starts with `prefix`
/// have used so far, in seconds (Linux thread names are cut to 15 bytes); `None` when it has
/// no such thread.
pub fn thread_cpu_seconds(pid: u32, prefix: &str) -> Option<f64> {
    let mut total = None;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        if let Some(s) = stat_cpu_seconds(&stat) {
            *total.get_or_insert(0.0) += s;
        }
    }
    total
}

/// utime + stime of a `/proc/.../stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
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

/// A self-signed certificate for `localhost` and 127.0.0.1 in PEM files of a fresh temporary
/// directory (removed when dropped), for benchmarks that turn the gate's TLS on.
pub struct SelfSigned {
    dir: std::path::PathBuf,
    der: tokio_rustls::rustls::pki_types::CertificateDer<'static>,
    spki: Vec<u8>,
}

impl SelfSigned {
    /// Makes the certificate and its key, and writes them as `cert.pem` and `key.pem`.
    pub fn new(name: &str) -> Result<SelfSigned, String> {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(|e| format!("certificate: {e}"))?;
        let dir = std::env::temp_dir().join(format!("mqrs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |file: &str, pem: String| {
            std::fs::write(dir.join(file), pem).map_err(|e| format!("{file}: {e}"))
        };
        write("cert.pem", made.cert.pem())?;
        write("key.pem", made.signing_key.serialize_pem())?;
        Ok(SelfSigned {
            der: made.cert.der().clone(),
            spki: rcgen::PublicKeyData::subject_public_key_info(&made.signing_key),
            dir,
        })
    }

    /// The directory holding both files (and nothing else a test did not put there).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The key's SubjectPublicKeyInfo, DER: what a browser pins a certificate by.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// The certificate's PEM file.
    pub fn cert(&self) -> std::path::PathBuf {
        self.dir.join("cert.pem")
    }

    /// The key's PEM file.
    pub fn key(&self) -> std::path::PathBuf {
        self.dir.join("key.pem")
    }

    /// The demo's flags that turn TLS on with this certificate, MQTT over TLS on a free port.
    pub fn demo_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert().display().to_string(),
            "--tls-key".into(),
            self.key().display().to_string(),
            "--tls".into(),
            "127.0.0.1:0".into(),
        ]
    }

    /// A rustls client configuration that trusts this certificate only.
    pub fn client_config(&self) -> Result<std::sync::Arc<ClientConfig>, String> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.der.clone())
            .map_err(|e| format!("root: {e}"))?;
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(std::sync::Arc::new(config))
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A mosquitto broker on a free loopback port, for floors measured through a standard broker;
/// killed when dropped.
pub struct Mosquitto {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Mosquitto {
    /// Starts `mosquitto` (from `PATH` or /usr/sbin, where Debian puts it) and waits until it
    /// listens; an error says why when it is not installed or does not start.
    pub fn start() -> Result<Mosquitto, String> {
        let exe = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .chain(["/usr/sbin".into()])
            .map(|d| d.join("mosquitto"))
            .find(|p| p.is_file())
            .ok_or("mosquitto is not installed (apt-get install mosquitto)")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("free port: {e}"))?
            .port();
        let dir = std::env::temp_dir().join(format!("mqrs-bench-mosquitto-{port}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n\
                 persistence false\nmax_connections -1\n"
            ),
        )
        .map_err(|e| format!("{}: {e}", conf.display()))?;
        let child = Command::new(&exe)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let mut m = Mosquitto { child, port, dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline || m.child.try_wait().ok().flatten().is_some() {
                return Err(format!("mosquitto did not listen on {port}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(m)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
