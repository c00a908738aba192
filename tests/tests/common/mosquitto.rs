//! A real mosquitto broker for the tests, on a loopback port, killed on drop.

use std::time::{Duration, Instant};

use super::tools;

/// A mosquitto broker on a free loopback port, stopped on drop.
pub struct Mosquitto {
    child: std::process::Child,
    pub port: u16,
    _dir: std::path::PathBuf,
}

impl Mosquitto {
    /// Starts one on a free port.
    pub fn start() -> Mosquitto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Mosquitto::start_on(port)
    }

    /// Starts one on `port` (again, after [`Mosquitto::kill`], to restart it).
    pub fn start_on(port: u16) -> Mosquitto {
        Mosquitto::start_with(port, "")
    }

    /// Starts one on `port` with extra lines of mosquitto.conf.
    pub fn start_with(port: u16, extra: &str) -> Mosquitto {
        let exe = tools::require("mosquitto", "mosquitto");
        let dir = std::env::temp_dir().join(format!("mqrs-mosquitto-{port}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n{extra}\n"
            ),
        )
        .expect("write config");
        let child = std::process::Command::new(exe)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Mosquitto {
    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
