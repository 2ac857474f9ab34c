//! A real single node for a [`ControlPlane`]: kube-controller-manager, kube-scheduler, a
//! kubelet and kube-proxy (built from the same Go modules as the apiserver) with containerd and
//! runc (Debian) and the CNI bridge plugin (Debian's containernetworking-plugins). Pods get
//! addresses on a bridge the node creates, `tbsc0` with 198.18.0.1/24, and Services ClusterIPs in
//! 198.19.0.0/16 (the benchmarking range; each pod is in a network namespace of its own), so
//! nothing outside this machine is ever a target. kube-proxy's iptables rules match those
//! ClusterIPs only, and are removed when the node stops.
//!
//! What this machine needs (tests/k8s/NOTES.md): cgroup v1 with the cgroupfs driver, containerd's
//! `restrict_oom_score_adj` (root has no CAP_SYS_RESOURCE), and a pause image built here.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::control_plane::{spawn, ControlPlane};
use crate::run_ok as run;

/// The bridge pods are attached to, and its address (the pods' gateway, where the node's host
/// side is reachable from pods, e.g. a broker standing in for ThingsBoard).
pub const BRIDGE: &str = "tbsc0";
pub const BRIDGE_ADDRESS: &str = "198.18.0.1";
const POD_SUBNET: &str = "198.18.0.0/24";
/// The apiserver's `--service-cluster-ip-range` (tests/src/control_plane.rs).
const SERVICE_SUBNET: &str = "198.19.0.0/16";
/// The pause image containerd starts each pod sandbox from (built by [`pause_image`]).
const PAUSE_IMAGE: &str = "localhost/pause:3.10";

pub struct Node {
    pub name: String,
    dir: TempDir,
    /// The cgroup under which the kubelet puts every pod (removed with its processes on drop).
    cgroup_root: String,
    containerd: Child,
    components: Vec<Child>,
    /// Pods reach the apiserver (on loopback) through this.
    apiserver_forward: Forward,
}

/// Forwards TCP from `from` to `to` (pods to the apiserver on loopback) until dropped.
struct Forward {
    from: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Forward {
    fn start(from: std::net::SocketAddr, to: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(from)
            .unwrap_or_else(|e| panic!("forward {from} to {to}: {e}"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let (Ok(inbound), Ok(outbound)) = (inbound, std::net::TcpStream::connect(to))
                else {
                    continue;
                };
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                if let (Ok(a), Ok(b)) = (inbound.try_clone(), outbound.try_clone()) {
                    pipe(a, outbound);
                    pipe(b, inbound);
                }
            }
        });
        Self { from, stop }
    }

    /// Stops accepting (while `from` is still an address of this machine).
    fn close(&self) {
        if !self.stop.swap(true, std::sync::atomic::Ordering::Relaxed) {
            // Wakes the accept loop so that it sees the flag and closes the listener.
            let _ = std::net::TcpStream::connect_timeout(&self.from, Duration::from_secs(1));
        }
    }
}

/// `ip ...`; the bridge is the only interface this creates, and it holds 198.18.0.1/24 only.
fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

impl Node {
    /// Starts containerd, imports `images` (OCI archives, under the names given), then the
    /// kubelet, kube-controller-manager and kube-scheduler against `plane`.
    pub fn start(plane: &ControlPlane, images: &[(&Path, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let name = "node-1".to_owned();
        let cgroup_root = format!("/tbsc-node-{}", std::process::id());
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
        ip(&["link", "add", BRIDGE, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{BRIDGE_ADDRESS}/24"),
            "dev",
            BRIDGE,
        ]);
        ip(&["link", "set", BRIDGE, "up"]);
        // ClusterIPs stay on the bridge: a packet to one that kube-proxy has not translated yet
        // goes nowhere but the pods' side, never out of the machine.
        ip(&["route", "add", SERVICE_SUBNET, "dev", BRIDGE]);
        // The `kubernetes` Service's endpoint (ControlPlane::start_for_pods advertises the bridge
        // address): kube-proxy sends pods there, and this hands them to the apiserver.
        let apiserver_forward = Forward::start(
            (
                BRIDGE_ADDRESS.parse::<std::net::IpAddr>().expect("ip"),
                plane.port,
            )
                .into(),
            (std::net::Ipv4Addr::LOCALHOST, plane.port).into(),
        );

        create_cgroup_root(&cgroup_root);
        let containerd = start_containerd(dir.path());
        let socket = dir.path().join("containerd/containerd.sock");
        let ctr = |args: &[&str]| {
            run(Command::new("ctr")
                .arg("--address")
                .arg(&socket)
                .args(["--namespace", "k8s.io"])
                .args(args))
        };
        let pause = pause_image(dir.path());
        for (archive, reference) in [(pause.as_path(), PAUSE_IMAGE)]
            .into_iter()
            .chain(images.iter().copied())
        {
            let imported = ctr(&[
                "images",
                "import",
                "--digests",
                "--base-name",
                "import",
                archive.to_str().unwrap(),
            ]);
            let digest = imported
                .split_whitespace()
                .find_map(|word| word.strip_prefix("import@"))
                .unwrap_or_else(|| panic!("no digest in {imported}"))
                .to_owned();
            ctr(&[
                "images",
                "tag",
                "--force",
                &format!("import@{digest}"),
                reference,
            ]);
        }

        let kubeconfig = plane.kubeconfig_file(&plane.kubeconfig_yaml(), "node.kubeconfig");
        let kubelet_config = dir.path().join("kubelet.yaml");
        // syncFrequency longer than any wait of the tests: a Secret rotated in the API reaches a
        // running pod's volume only when something makes the kubelet sync that pod (the
        // operator's annotation with watchSecrets), not by the periodic sync.
        std::fs::write(
            &kubelet_config,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                 cgroupDriver: cgroupfs\ncgroupRoot: {cgroup_root}\nfailSwapOn: false\nfailCgroupV1: false\n\
                 containerRuntimeEndpoint: unix://{socket}\naddress: 127.0.0.1\nport: {port}\n\
                 readOnlyPort: 0\nhealthzPort: 0\n\
                 authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}\n\
                 authorization: {{mode: AlwaysAllow}}\nenforceNodeAllocatable: []\n\
                 localStorageCapacityIsolation: false\nmakeIPTablesUtilChains: false\n\
                 resolvConf: /etc/resolv.conf\nsyncFrequency: 10m\nnodeStatusUpdateFrequency: 2s\n\
                 podLogsDir: {logs}\n",
                socket = socket.display(),
                logs = dir.path().join("pod-logs").display(),
                port = crate::free_port(),
            ),
        )
        .unwrap();
        let kubelet = spawn(
            "kubelet",
            &[
                format!("--config={}", kubelet_config.display()),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--root-dir={}", dir.path().join("kubelet").display()),
                format!("--hostname-override={name}"),
                format!("--node-ip={BRIDGE_ADDRESS}"),
                format!("--cert-dir={}", dir.path().join("kubelet-pki").display()),
            ],
            "kubelet",
        );
        let controller_manager = spawn(
            "kube-controller-manager",
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                format!(
                    "--service-account-private-key-file={}",
                    plane.file("sa.key").display()
                ),
                format!("--root-ca-file={}", plane.file("ca.crt").display()),
                "--leader-elect=false".to_owned(),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={}", crate::free_port()),
                "--controllers=*,-nodeipam,-route,-service,-cloud-node-lifecycle".to_owned(),
            ],
            "kube-controller-manager",
        );
        let scheduler = spawn(
            "kube-scheduler",
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                "--leader-elect=false".to_owned(),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={}", crate::free_port()),
            ],
            "kube-scheduler",
        );
        let proxy = spawn(
            "kube-proxy",
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--hostname-override={name}"),
                "--proxy-mode=iptables".to_owned(),
                format!("--cluster-cidr={POD_SUBNET}"),
                // NodePorts only on the bridge address; no conntrack sysctls touched.
                format!("--nodeport-addresses={BRIDGE_ADDRESS}/32"),
                "--iptables-localhost-nodeports=false".to_owned(),
                "--conntrack-max-per-core=0".to_owned(),
                "--conntrack-tcp-timeout-established=0".to_owned(),
                "--conntrack-tcp-timeout-close-wait=0".to_owned(),
                format!("--metrics-bind-address=127.0.0.1:{}", crate::free_port()),
                format!("--healthz-bind-address=127.0.0.1:{}", crate::free_port()),
            ],
            "kube-proxy",
        );
        Self {
            name,
            dir,
            cgroup_root,
            containerd,
            components: vec![kubelet, controller_manager, scheduler, proxy],
            apiserver_forward,
        }
    }

    /// Processes still in the node's pod cgroups.
    fn pod_processes(&self) -> Vec<u32> {
        let root =
            PathBuf::from("/sys/fs/cgroup/pids").join(self.cgroup_root.trim_start_matches('/'));
        let mut pids = Vec::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.file_name().is_some_and(|n| n == "cgroup.procs") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
                }
            }
        }
        pids
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.apiserver_forward.close();
        for child in &mut self.components {
            let _ = child.kill();
            let _ = child.wait();
        }
        // kube-proxy's chains and rules.
        let _ = Command::new(crate::control_plane::bin_dir().join("kube-proxy"))
            .args(["--cleanup", "--proxy-mode=iptables"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Containers outlive the kubelet and containerd (their shims reparent them): kill what is
        // left in the pod cgroups, then the shims of this containerd, then containerd.
        for _ in 0..3 {
            for pid in self.pod_processes() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let socket = self.dir.path().join("containerd/containerd.sock");
        let _ = Command::new("pkill")
            .args([
                "-9",
                "-f",
                &format!("containerd-shim.*{}", socket.display()),
            ])
            .output();
        let _ = self.containerd.kill();
        let _ = self.containerd.wait();
        // The pod network namespaces containerd made, and the bridge.
        if let Ok(list) = run_quiet(Command::new("ip").args(["-json", "netns", "list"])) {
            if let Ok(namespaces) = serde_json::from_str::<Vec<serde_json::Value>>(&list) {
                for namespace in namespaces {
                    let Some(name) = namespace["name"].as_str() else {
                        continue;
                    };
                    let pids = run_quiet(Command::new("ip").args(["netns", "pids", name]));
                    if name.starts_with("cni-") && pids.is_ok_and(|p| p.trim().is_empty()) {
                        let _ = Command::new("ip").args(["netns", "delete", name]).output();
                    }
                }
            }
        }
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
        unmount_under(self.dir.path());
        remove_cgroup_root(&self.cgroup_root);
    }
}

/// The cgroup v1 hierarchies (every directory of /sys/fs/cgroup but the v2 mount).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.ends_with("unified"))
                .collect()
        })
        .unwrap_or_default()
}

/// The kubelet's `cgroupRoot` must exist in every hierarchy; a new cpuset has no CPUs or
/// memory nodes until given its parent's.
fn create_cgroup_root(root: &str) {
    for hierarchy in cgroup_hierarchies() {
        let path = hierarchy.join(root.trim_start_matches('/'));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create cgroup {}: {e}", path.display()));
        if hierarchy.ends_with("cpuset") {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let parent = std::fs::read_to_string(hierarchy.join(file)).unwrap();
                std::fs::write(path.join(file), parent.trim()).unwrap();
            }
        }
    }
}

/// Removes the (by now empty) cgroups under the root, deepest first.
fn remove_cgroup_root(root: &str) {
    for hierarchy in cgroup_hierarchies() {
        let top = hierarchy.join(root.trim_start_matches('/'));
        let mut dirs = vec![];
        let mut stack = vec![top];
        while let Some(dir) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            dirs.push(dir);
        }
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn run_quiet(command: &mut Command) -> Result<String, ()> {
    let output = command.output().map_err(|_| ())?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
        .ok_or(())
}

/// Unmounts what containerd and the kubelet mounted under `dir` (deepest first), so the
/// temporary directory can be removed.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut targets: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|target| target.starts_with(&prefix))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for target in targets {
        let _ = Command::new("umount").args(["-l", target]).output();
    }
}

fn start_containerd(dir: &Path) -> Child {
    let root = dir.join("containerd");
    std::fs::create_dir_all(root.join("cni")).unwrap();
    std::fs::write(
        root.join("cni/10-tbsc.conflist"),
        serde_json::json!({
            "cniVersion": "0.4.0", "name": "tbsc",
            "plugins": [{"type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": false,
                "hairpinMode": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET, "gateway": BRIDGE_ADDRESS}]], "routes": [{"dst": SERVICE_SUBNET}],
                    "dataDir": root.join("ipam")}}]
        })
        .to_string(),
    )
    .unwrap();
    let config = root.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{r}/root\"\nstate = \"{r}/state\"\n[grpc]\n  address = \"{r}/containerd.sock\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{PAUSE_IMAGE}\"\n  restrict_oom_score_adj = true\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"overlayfs\"\n  default_runtime_name = \"runc\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = false\n\
             [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/usr/lib/cni\"\n  conf_dir = \"{r}/cni\"\n",
            r = root.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(root.join("containerd.log")).unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start containerd (apt-get install containerd)");
    let socket = root.join("containerd.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "containerd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// The pod sandbox image: a static `pause` (as Kubernetes' own: wait for a signal, reap
/// children) on an empty base, built with musl-gcc and buildah.
fn pause_image(dir: &Path) -> PathBuf {
    let source = dir.join("pause.c");
    std::fs::write(
        &source,
        "#include <signal.h>\n#include <sys/wait.h>\n#include <unistd.h>\n\
         static void down(int s) { (void)s; _exit(0); }\n\
         static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }\n\
         int main(void) {\n  struct sigaction d = {.sa_handler = down}, r = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};\n\
           sigaction(SIGINT, &d, 0); sigaction(SIGTERM, &d, 0); sigaction(SIGCHLD, &r, 0);\n  for (;;) pause();\n}\n",
    )
    .unwrap();
    let binary = dir.join("pause");
    run(Command::new("musl-gcc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&binary)
        .arg(&source));
    let archive = dir.join("pause.oci.tar");
    let container = run(Command::new("buildah").args(["from", "scratch"]))
        .trim()
        .to_owned();
    run(Command::new("buildah")
        .args(["copy", &container])
        .arg(&binary)
        .arg("/pause"));
    run(Command::new("buildah").args([
        "config",
        "--entrypoint",
        "[\"/pause\"]",
        "--user",
        "65535:65535",
        &container,
    ]));
    run(Command::new("buildah")
        .args([
            "commit",
            "--quiet",
            "--timestamp",
            "0",
            "--format",
            "oci",
            &container,
        ])
        .arg(format!("oci-archive:{}", archive.display())));
    run(Command::new("buildah").args(["rm", &container]));
    archive
}
