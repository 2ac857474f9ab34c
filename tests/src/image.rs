//! The container image that `tests/image/build.sh` writes (an OCI archive), opened as a registry
//! would serve it, and podman run with the restrictions the chart's pods have.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;
use tempfile::TempDir;

/// The OCI archive for `arch` (`amd64`, `arm64`): `SC_IMAGE_AMD64`/`SC_IMAGE_ARM64` (tests/run.sh
/// builds them first), else what `build.sh` prints (it builds the release binaries once).
pub fn archive(arch: &str) -> PathBuf {
    static ARCHIVES: OnceLock<std::sync::Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let archives = ARCHIVES.get_or_init(Default::default);
    let mut archives = archives
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, path)) = archives.iter().find(|(a, _)| a == arch) {
        return path.clone();
    }
    let variable = format!("SC_IMAGE_{}", arch.to_uppercase());
    let path = match std::env::var_os(&variable) {
        Some(path) => PathBuf::from(path),
        None => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("image/build.sh");
            let output = Command::new("bash")
                .arg(&script)
                .arg(arch)
                .stderr(Stdio::inherit())
                .output()
                .expect("run tests/image/build.sh");
            assert!(output.status.success(), "building the {arch} image failed");
            let stdout = String::from_utf8_lossy(&output.stdout);
            PathBuf::from(stdout.lines().last().expect("archive path").trim())
        }
    };
    archives.push((arch.to_owned(), path.clone()));
    path
}

/// An OCI archive unpacked: its manifest, its config and its (single) layer's files.
pub struct OciImage {
    pub config: Value,
    /// The layer's files, unpacked.
    pub rootfs: PathBuf,
    /// Every path in the layer, as `tar -t` lists it (`./usr/local/bin/...`).
    pub paths: Vec<String>,
    _dir: TempDir,
}

impl OciImage {
    pub fn open(archive: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        tar(&[
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            layout.to_str().unwrap(),
        ]);
        let json = |path: PathBuf| -> Value {
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
        };
        let blob = |digest: &Value| {
            let digest = digest.as_str().expect("digest");
            let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
            layout.join("blobs/sha256").join(hex)
        };
        let index = json(layout.join("index.json"));
        let manifests = index["manifests"].as_array().expect("manifests");
        assert_eq!(manifests.len(), 1, "one image per archive: {index}");
        let manifest = json(blob(&manifests[0]["digest"]));
        let config = json(blob(&manifest["config"]["digest"]));
        let layers = manifest["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), 1, "one layer, no base image: {manifest}");
        let layer = blob(&layers[0]["digest"]);
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let paths = tar(&["-tf", layer.to_str().unwrap()])
            .lines()
            .map(str::to_owned)
            .collect();
        tar(&[
            "-xf",
            layer.to_str().unwrap(),
            "-C",
            rootfs.to_str().unwrap(),
            "--no-same-owner",
        ]);
        Self {
            config,
            rootfs,
            paths,
            _dir: dir,
        }
    }
}

fn tar(args: &[&str]) -> String {
    crate::run_ok(Command::new("tar").args(args))
}

/// `podman <args>`; panics with its output unless it succeeds.
pub fn podman(args: &[&str]) -> String {
    crate::run_ok(Command::new("podman").args(args))
}

/// Loads the archive into podman's store; the image's ID.
pub fn load(archive: &Path) -> String {
    let loaded = podman(&["load", "--quiet", "--input", archive.to_str().unwrap()]);
    // "Loaded image: sha256:<id>" or "Loaded image(s): <name>"
    let reference = loaded
        .lines()
        .last()
        .and_then(|line| line.rsplit(' ').next())
        .expect("podman load output")
        .trim()
        .to_owned();
    podman(&["image", "inspect", "--format", "{{.Id}}", &reference])
        .trim()
        .to_owned()
}

/// `podman run` arguments for a container restricted as the chart's pods are (the restricted Pod
/// Security Standard): read-only root, user and group 65532, no capabilities, no new privileges.
///
/// runc, because crun 1.8 refuses this machine's hybrid cgroup v1 layout; file and process limits
/// at most the current hard limits, which root cannot raise here (no CAP_SYS_RESOURCE).
pub fn restricted_run_args() -> Vec<String> {
    let open_files = hard_limit("Max open files").unwrap_or(1024);
    [
        "run",
        "--runtime",
        "runc",
        "--read-only",
        "--user",
        "65532:65532",
        "--cap-drop",
        "all",
        "--security-opt",
        "no-new-privileges",
        "--ulimit",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([
        format!("nofile={open_files}:{open_files}"),
        "--ulimit".to_owned(),
        "nproc=4096:4096".to_owned(),
    ])
    .collect()
}

fn hard_limit(name: &str) -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().nth(1)?.parse().ok()
}
