//! Mosquitto (Debian package `mosquitto`) on a free loopback port with its own configuration.
//! Tests fail, never skip, when it is missing: `.ci/run` installs it.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct Mosquitto {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// Lines added to the broker's configuration.
    extra: Vec<String>,
    /// A second listener's configuration, with its own settings (`per_listener_settings`).
    listener: Vec<String>,
}

impl Mosquitto {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra `mosquitto.conf` lines (e.g. `max_packet_size 65536`).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut broker = Self {
            port: crate::free_port(),
            dir,
            child: None,
            extra: extra.iter().map(|line| (*line).to_owned()).collect(),
            listener: Vec::new(),
        };
        broker.launch();
        broker
    }

    /// A broker with a second listener on `port` configured by `lines` (TLS, passwords, client
    /// certificates: what ThingsBoard's MQTT transport enforces); the first listener stays
    /// plain and anonymous for the test peer.
    pub fn start_with_listener(port: u16, lines: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut listener = vec![format!("listener {port} 127.0.0.1")];
        listener.extend(lines.iter().cloned());
        let mut broker = Self {
            port: crate::free_port(),
            dir,
            child: None,
            extra: Vec::new(),
            listener,
        };
        broker.launch();
        broker
    }

    /// The broker's working directory (for password files and certificates).
    pub fn directory(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the broker (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the broker (SIGSTOP): its connections stay open but nothing is read or
    /// acknowledged, like a ThingsBoard that stopped answering.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} mosquitto failed");
        }
    }

    /// Starts the broker again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn launch(&mut self) {
        let config = self.dir.path().join("mosquitto.conf");
        let mut text = String::new();
        if !self.listener.is_empty() {
            text.push_str("per_listener_settings true\n");
        }
        text.push_str(&format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 1000000\nmax_inflight_messages 0\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n",
            self.port
        ));
        for line in self.extra.iter().chain(&self.listener) {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&config, text).expect("write mosquitto.conf");
        let mut child = Command::new(binary())
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start mosquitto ({e}); install it: apt-get install mosquitto")
            });
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[mosquitto] {line}");
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOSQUITTO") {
        return path.into();
    }
    for candidate in [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ] {
        let path = PathBuf::from(candidate);
        if path.exists() {
            return path;
        }
    }
    PathBuf::from("mosquitto")
}
