//! The container image as tests/image/build.sh builds it without a Docker daemon: its files
//! and config, the amd64 image run by podman as the chart runs its pods (the demo delivers; a
//! disk queue on a volume survives a new container), the arm64 image under qemu-user; and the
//! chart and the operator pointing at it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e_tests::http::{get, sample};
use e2e_tests::image::{archive, load, podman, restricted_run_args, OciImage};
use e2e_tests::peer::value;
use e2e_tests::{free_port, Mosquitto, ThingsBoardPeer, PROMPTLY};
use serde_json::json;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
}

/// The names under `[[bin]]` of a Cargo.toml (just enough parsing for our manifests).
fn bins(manifest: &str) -> Vec<String> {
    let mut bins = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(name) = line.strip_prefix("name = ").filter(|_| in_bin) {
            bins.push(name.trim_matches('"').to_owned());
        }
    }
    bins
}

fn workspace_bins() -> Vec<String> {
    let mut workspace_bins = bins(&read("connector/Cargo.toml"));
    workspace_bins.extend(bins(&read("operator/Cargo.toml")));
    workspace_bins.sort();
    workspace_bins
}

/// ELF `e_machine` of a binary, and whether it asks for a dynamic loader (a `PT_INTERP` header).
fn elf_machine_and_interpreter(path: &Path) -> (u16, bool) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..5],
        b"\x7fELF\x02",
        "{}: not a 64-bit ELF",
        path.display()
    );
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)), usize::from(u16_at(0x38)));
    let interpreter = (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) == 3
    });
    (u16_at(0x12), interpreter)
}

const X86_64: u16 = 62;
const AARCH64: u16 = 183;

/// The image's files, config and binaries, as build.sh writes them (and the Dockerfile should).
fn check_image(image: &OciImage, arch: &str, machine: u16) {
    let config = &image.config;
    assert_eq!(config["architecture"], arch);
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["config"]["Entrypoint"], json!(["socket-connector"]));
    // mimalloc, lean: its memory stays at musl's (docs/benchmarks.md#the-images-allocator).
    let env = config["config"]["Env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for lean in ["MIMALLOC_ARENA_EAGER_COMMIT=0", "MIMALLOC_PURGE_DELAY=0"] {
        assert!(
            env.contains(&json!(lean)),
            "{arch} image env lacks {lean}: {env:?}"
        );
    }
    let binary = std::fs::read(image.rootfs.join("usr/local/bin/socket-connector")).unwrap();
    assert!(
        binary.windows(b"mimalloc".len()).any(|w| w == b"mimalloc"),
        "the {arch} connector does not allocate with mimalloc"
    );
    let mut files: Vec<String> = image
        .paths
        .iter()
        .map(|p| p.trim_start_matches("./").to_owned())
        .filter(|p| !p.is_empty() && !p.ends_with('/'))
        .collect();
    files.sort();
    let mut expected: Vec<String> = workspace_bins()
        .iter()
        .map(|bin| format!("usr/local/bin/{bin}"))
        .chain(
            [
                "etc/group",
                "etc/passwd",
                "etc/ssl/certs/ca-certificates.crt",
            ]
            .map(String::from),
        )
        .collect();
    expected.sort();
    assert_eq!(files, expected, "the image holds exactly these files");
    let passwd = std::fs::read_to_string(image.rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    for bin in workspace_bins() {
        let (found, interpreter) =
            elf_machine_and_interpreter(&image.rootfs.join("usr/local/bin").join(&bin));
        assert_eq!(found, machine, "{bin} is built for ELF machine {found}");
        assert!(!interpreter, "{bin} needs a dynamic loader: not static");
    }
}

#[test]
fn image_holds_the_static_workspace_binaries_and_runs_as_non_root() {
    check_image(&OciImage::open(&archive("amd64")), "amd64", X86_64);
    // The Dockerfile, for people with a daemon, builds and writes the same.
    let dockerfile = read("Dockerfile");
    for bin in workspace_bins() {
        assert!(
            dockerfile.contains(&format!("--bin {bin}")),
            "Dockerfile does not build {bin}"
        );
    }
    for line in [
        "FROM scratch",
        "USER 65532:65532",
        "ENTRYPOINT [\"socket-connector\"]",
    ] {
        assert!(dockerfile.contains(line), "Dockerfile lacks {line}");
    }
    let build_script = read("tests/image/build.sh");
    for same in [
        "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin",
        "/etc/ssl/certs/ca-certificates.crt",
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        "MIMALLOC_ARENA_EAGER_COMMIT=0",
        "MIMALLOC_PURGE_DELAY=0",
    ] {
        assert!(dockerfile.contains(same), "Dockerfile lacks {same}");
        assert!(build_script.contains(same), "build.sh lacks {same}");
    }
}

#[test]
fn arm64_image_runs_under_qemu() {
    let image = OciImage::open(&archive("arm64"));
    check_image(&image, "arm64", AARCH64);
    let output = Command::new("qemu-aarch64-static")
        .arg(image.rootfs.join("usr/local/bin/socket-connector"))
        .args(["demo", "--duration", "4"])
        .output()
        .expect("run qemu-aarch64-static (apt-get install qemu-user-static)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("v1/gateway/telemetry") && stdout.contains("Thermometer A"),
        "{stdout}"
    );
}

#[test]
fn image_runs_the_demo_as_the_chart_runs_it() {
    let id = load(&archive("amd64"));
    let mut args = restricted_run_args();
    args.extend(["--rm", "--network", "none", &id, "demo", "--duration", "4"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdout = podman(&args);
    assert!(
        stdout.contains("v1/gateway/telemetry") && stdout.contains("Thermometer A"),
        "{stdout}"
    );
}

/// Removes the container when dropped, so a failed test leaves none behind.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", &self.0])
            .output();
    }
}

/// Starts the connector image detached, on the host's network namespace (loopback only), with
/// `config` mounted read-only and `queue` as its disk queue volume.
fn start_connector(
    id: &str,
    name: &str,
    config: &Path,
    queue: &Path,
    broker: u16,
    metrics: u16,
) -> Container {
    let mut args = restricted_run_args();
    args.extend(
        [
            "--detach",
            "--name",
            name,
            "--network",
            "host",
            "--env",
            "TB_ACCESS_TOKEN=gateway-token",
            "--volume",
            &format!("{}:/config:ro", config.display()),
            "--volume",
            &format!("{}:/var/lib/socket-connector/queue", queue.display()),
            id,
            "run",
            "--config",
            "/config/socket.json",
            "--tb-host",
            "127.0.0.1",
            "--tb-port",
            &broker.to_string(),
            "--queue-directory",
            "/var/lib/socket-connector/queue",
            "--queue-fsync",
            "always",
            "--metrics-address",
            &format!("127.0.0.1:{metrics}"),
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman(&args);
    Container(name.to_owned())
}

/// Waits until `check` holds for the metrics endpoint (which may not be up yet).
fn wait_for_endpoint(metrics: SocketAddr, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let up = std::net::TcpStream::connect(metrics).is_ok();
        if up && check(&get(metrics, "/metrics").1) && get(metrics, "/readyz").0 == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not reached");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_queue_on_a_volume_survives_a_container_restart() {
    let id = load(&archive("amd64"));
    let mut broker = Mosquitto::start();
    broker.kill();
    let dir = tempfile::tempdir().unwrap();
    let (config, queue) = (dir.path().join("config"), dir.path().join("queue"));
    std::fs::create_dir(&config).unwrap();
    std::fs::create_dir(&queue).unwrap();
    std::os::unix::fs::chown(&queue, Some(65532), Some(65532)).unwrap();
    let device_port = free_port();
    std::fs::write(
        config.join("socket.json"),
        json!({
            "name": "Boxed",
            "socket": {"type": "TCP", "address": "127.0.0.1", "port": device_port},
            "devices": [{"address": "127.0.0.1:*", "deviceName": "Meter",
                "telemetry": [{"key": "temp", "byteFrom": 0, "byteTo": -1}]}]
        })
        .to_string(),
    )
    .unwrap();
    let metrics_port = free_port();
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let name = format!("tbsc-queue-{}", std::process::id());

    // ThingsBoard is down: what the device sends waits in the queue on the volume.
    let first = start_connector(&id, &name, &config, &queue, broker.port(), metrics_port);
    wait_for_endpoint(metrics, "connector up", |_| true);
    let mut device = std::net::TcpStream::connect(("127.0.0.1", device_port)).unwrap();
    for value in ["21.5", "22.5", "23.5"] {
        device.write_all(value.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for_endpoint(metrics, "3 frames queued", |text| {
        sample(
            text,
            "socket_connector_frames_received_total{device=\"Meter\"}",
        ) == Some(3.0)
            && sample(text, "socket_connector_queue_records").is_some_and(|n| n >= 3.0)
    });
    drop(device);
    podman(&["stop", "--time", "10", &name]);
    drop(first);

    // A new container on the same volume, ThingsBoard back: the queued telemetry arrives.
    broker.restart();
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let _second = start_connector(&id, &name, &config, &queue, broker.port(), metrics_port);
    let values = peer.telemetry_values(3).await;
    assert_eq!(
        values,
        ["21.5", "22.5", "23.5"]
            .map(|v| value("Meter", "temp", v))
            .to_vec()
    );
}

#[test]
fn chart_and_operator_use_the_image_and_its_commands() {
    let values = read("charts/socket-connector-operator/values.yaml");
    let deployment = read("charts/socket-connector-operator/templates/deployment.yaml");
    let default_image = socket_connector_operator::build::Defaults::default().image;
    let repository = default_image.rsplit_once(':').unwrap().0;
    assert!(
        values.contains(&format!("repository: {repository}")),
        "chart image repository is not {repository}"
    );
    assert!(deployment.contains("command: [socket-connector-operator]"));
    let chart = read("charts/socket-connector-operator/Chart.yaml");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        chart.contains(&format!("appVersion: \"{version}\"")),
        "appVersion must be the workspace version {version}"
    );
    assert!(default_image.ends_with(&format!(":{version}")));
}
