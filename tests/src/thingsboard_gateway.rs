//! The real ThingsBoard IoT Gateway (PyPI `thingsboard-gateway`, socket connector only, memory
//! storage) as a child process, for differential tests. `tests/tbgw/` holds its installer and
//! launcher; the tests fail, never skip, when it cannot be installed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

fn tbgw_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tbgw")
}

/// The venv python with the gateway installed: `TBGW_PYTHON`, or what `install.sh` prints.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("TBGW_PYTHON") {
                return path.into();
            }
            let output = Command::new("bash")
                .arg(tbgw_dir().join("install.sh"))
                .stderr(Stdio::inherit())
                .output()
                .expect("run tests/tbgw/install.sh");
            assert!(
                output.status.success(),
                "installing the ThingsBoard gateway failed"
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            PathBuf::from(
                stdout
                    .lines()
                    .last()
                    .expect("install.sh prints the python path")
                    .trim(),
            )
        })
        .clone()
}

pub struct ThingsBoardGateway {
    child: Child,
    _dir: TempDir,
}

impl ThingsBoardGateway {
    /// Starts the gateway with `socket_config` against the broker on `broker_port`.
    pub fn start(socket_config: &Value, broker_port: u16) -> Self {
        Self::start_with(socket_config, broker_port, &[])
    }

    /// Like [`Self::start`], with more arguments of `tests/tbgw/run_gateway.py`
    /// (`--remote-configuration`).
    pub fn start_with(socket_config: &Value, broker_port: u16, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("socket-input.json");
        std::fs::write(&config, serde_json::to_vec_pretty(socket_config).unwrap()).unwrap();
        let child = Command::new(python())
            .arg(tbgw_dir().join("run_gateway.py"))
            .args(extra_args)
            .args(["--mqtt-host", "127.0.0.1", "--mqtt-port"])
            .arg(broker_port.to_string())
            .args(["--token", "test-gateway-token", "--socket-config"])
            .arg(&config)
            .arg("--workdir")
            .arg(dir.path().join("gateway"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the ThingsBoard gateway");
        Self { child, _dir: dir }
    }

    /// SIGTERM and wait: the gateway disconnects its devices on the way out.
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ThingsBoardGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
