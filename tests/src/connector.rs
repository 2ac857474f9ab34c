//! The real `socket-connector` binary as a child process, configured by a temp `socket.json`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub struct ConnectorProcess {
    child: Child,
    _dir: TempDir,
    logs: Arc<Mutex<Vec<Value>>>,
    pub local_addr: SocketAddr,
}

/// The `socket-connector` binary of this workspace, built once per test run with the same
/// profile as the tests.
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            std::env::var_os("SOCKET_CONNECTOR_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_binary("socket-connector", "socket-connector"))
        })
        .clone()
}

/// `socket-connector validate` of `config` written to a file (stdout holds the report).
pub fn validate(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("socket.json");
    std::fs::write(&path, config).expect("write config");
    Command::new(binary())
        .arg("validate")
        .arg(&path)
        .output()
        .expect("run socket-connector validate")
}

/// Builds `bin` of `package` with the tests' profile and returns its path.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    // target/<profile>/deps/<test> or target/<profile>/<bin> → target/<profile>/<bin>
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("target dir");
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target dir")
    } else {
        dir
    };
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-q", "-p", package, "--bin", bin]);
    if release {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building {bin} failed");
    profile_dir.join(bin)
}

impl ConnectorProcess {
    /// Writes `config` to a file and runs `socket-connector run` against the broker on
    /// `broker_port`, waiting until the device socket is up.
    pub fn start(config: &Value, broker_port: u16) -> Self {
        Self::start_with(config, broker_port, &[])
    }

    pub fn start_with(config: &Value, broker_port: u16, extra_args: &[&str]) -> Self {
        Self::start_written(config, broker_port, extra_args, None)
    }

    /// Like [`Self::start_with`], with the config file last modified `age` ago (a file older
    /// than an edit saved in ThingsBoard).
    pub fn start_with_old_file(
        config: &Value,
        broker_port: u16,
        extra_args: &[&str],
        age: std::time::Duration,
    ) -> Self {
        Self::start_written(config, broker_port, extra_args, Some(age))
    }

    fn start_written(
        config: &Value,
        broker_port: u16,
        extra_args: &[&str],
        age: Option<std::time::Duration>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("socket.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).expect("write config");
        if let Some(age) = age {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_modified(std::time::SystemTime::now() - age))
                .expect("set the file's modification time");
        }
        let mut command = Self::command(&path, broker_port);
        command.args(extra_args);
        Self::spawn(command, dir)
    }

    /// `socket-connector run --log-format json <args>` and nothing else: the test gives where
    /// ThingsBoard is and the credentials (or `--gateway-config`). `files` are written into the
    /// connector's directory first (`socket.json`, `tb_gateway.json`, certificates), and `{dir}`
    /// in the arguments is replaced by that directory.
    pub fn start_args(files: &[(&str, &[u8])], args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("write file");
        }
        let directory = dir.path().display().to_string();
        let mut command = Command::new(binary());
        command
            .arg("run")
            .args(["--log-format", "json"])
            .args(args.iter().map(|arg| arg.replace("{dir}", &directory)))
            .env_remove("RUST_LOG")
            .env_remove("TB_ACCESS_TOKEN");
        Self::spawn(command, dir)
    }

    /// The connector's directory (what `{dir}` stood for in [`Self::start_args`]).
    pub fn directory(&self) -> &Path {
        self._dir.path()
    }

    fn spawn(mut command: Command, dir: TempDir) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start socket-connector");
        let logs: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (up_tx, up_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[connector] {line}");
                let Ok(record) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if record["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("socket is up"))
                {
                    if let Some(address) = record["address"].as_str().and_then(|a| a.parse().ok()) {
                        let _ = up_tx.send(address);
                    }
                }
                sink.lock().unwrap().push(record);
            }
        });
        let local_addr: SocketAddr = match up_rx.recv_timeout(crate::PROMPTLY) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "socket-connector did not bring its socket up; status {:?}",
                    child.wait()
                );
            }
        };
        Self {
            child,
            _dir: dir,
            logs,
            local_addr,
        }
    }

    /// The command line the harness uses, for tests that run the binary themselves.
    pub fn command(config: &Path, broker_port: u16) -> Command {
        let mut command = Command::new(binary());
        command
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(["--tb-host", "127.0.0.1", "--tb-port"])
            .arg(broker_port.to_string())
            .args(["--token", "test-gateway-token", "--log-format", "json"])
            .env_remove("RUST_LOG");
        command
    }

    /// Log records (JSON objects) whose message contains `text`.
    pub fn logs_containing(&self, text: &str) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r["message"].as_str().is_some_and(|m| m.contains(text)))
            .cloned()
            .collect()
    }

    /// Waits until a log record containing `text` appears.
    pub fn wait_for_log(&self, text: &str) -> Value {
        self.wait_for_logs(text, 1).remove(0)
    }

    /// Waits until `count` log records containing `text` appeared.
    pub fn wait_for_logs(&self, text: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + crate::PROMPTLY;
        loop {
            let records = self.logs_containing(text);
            if records.len() >= count {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {count} log lines containing {text:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `socket.json` the connector runs with (rewrite it to test hot reload).
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("socket.json")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + crate::PROMPTLY;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("socket-connector ignored SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ConnectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
