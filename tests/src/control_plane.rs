//! A real Kubernetes control plane for tests: etcd and kube-apiserver built from Go modules by
//! `tests/k8s/build-binaries.sh` (cached by version under /var/cache/tbsc), started on loopback
//! ports with TLS, client-certificate authentication and RBAC, as envtest does. Tests fail, never
//! skip, when the binaries cannot be built.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rcgen::KeyPair;
use tempfile::TempDir;

use crate::pki::TestCa;

/// `kubectl` of the same Kubernetes version, built with the rest (the machine's own, if any, is
/// not used).
pub fn kubectl() -> Command {
    Command::new(bin_dir().join("kubectl"))
}

/// The directory with `etcd`, `kube-apiserver`, `kubectl` and `helm`: `SC_K8S_BIN`, or what
/// `build-binaries.sh` prints (it builds them once, then answers from its cache).
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SC_K8S_BIN") {
            return dir.into();
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/build-binaries.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/k8s/build-binaries.sh");
        assert!(
            output.status.success(),
            "building the Kubernetes test binaries failed"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        PathBuf::from(stdout.lines().last().expect("bin dir").trim())
    })
    .clone()
}

pub struct ControlPlane {
    dir: TempDir,
    etcd: Child,
    apiserver: Child,
    pub port: u16,
    ca_pem: String,
    admin_cert: String,
    admin_key: String,
}

struct Pki {
    ca: String,
    serving_cert: String,
    serving_key: String,
    admin_cert: String,
    admin_key: String,
    sa_key: String,
    sa_public: String,
}

fn pki() -> Pki {
    let ca = TestCa::new("socket-connector-test-ca");
    // Loopback for the tests' clients; the node's bridge address and the `kubernetes` Service's
    // ClusterIP for pods (ControlPlane::start_for_pods).
    let serving = ca.server(&[
        "localhost",
        "kubernetes.default.svc",
        "127.0.0.1",
        crate::node::BRIDGE_ADDRESS,
        KUBERNETES_SERVICE_IP,
    ]);
    let admin = ca.client("socket-connector-test-admin", Some("system:masters"), false);
    let sa = KeyPair::generate().expect("key");
    Pki {
        ca: ca.pem,
        serving_cert: serving.pem,
        serving_key: serving.key_pem,
        admin_cert: admin.pem,
        admin_key: admin.key_pem,
        sa_key: sa.serialize_pem(),
        sa_public: sa.public_key_pem(),
    }
}

pub(crate) fn spawn(binary: &str, args: &[String], log: &str) -> Child {
    let path = bin_dir().join(binary);
    let mut child = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
    let stderr = child.stderr.take().expect("stderr");
    let log = log.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if std::env::var_os("SC_K8S_LOGS").is_some() {
                eprintln!("[{log}] {line}");
            }
        }
    });
    child
}

/// The first address of `--service-cluster-ip-range`: the `kubernetes` Service's ClusterIP.
pub const KUBERNETES_SERVICE_IP: &str = "198.19.0.1";

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the apiserver is ready.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// As [`ControlPlane::start`], for a node whose pods use the API (tests/src/node.rs): the
    /// `kubernetes` Service points at the node's bridge address (where the node forwards to the
    /// apiserver on loopback), and the ServiceAccount admission plugin gives pods their token.
    pub fn start_for_pods() -> Self {
        Self::start_with(true)
    }

    fn start_with(for_pods: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = pki();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write pki");
            path.display().to_string()
        };
        let ca = write("ca.crt", &pki.ca);
        let serving_cert = write("apiserver.crt", &pki.serving_cert);
        let serving_key = write("apiserver.key", &pki.serving_key);
        let sa_key = write("sa.key", &pki.sa_key);
        let sa_public = write("sa.pub", &pki.sa_public);

        let etcd_port = crate::free_port();
        let peer_port = crate::free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd = spawn(
            "etcd",
            &[
                "--name=test".to_owned(),
                format!("--data-dir={}", dir.path().join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-cluster=test=http://127.0.0.1:{peer_port}"),
                "--unsafe-no-fsync=true".to_owned(),
                "--log-level=error".to_owned(),
            ],
            "etcd",
        );
        let port = crate::free_port();
        let apiserver = spawn(
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".to_owned(),
                format!(
                    "--advertise-address={}",
                    if for_pods {
                        crate::node::BRIDGE_ADDRESS
                    } else {
                        "127.0.0.1"
                    }
                ),
                format!("--secure-port={port}"),
                format!("--tls-cert-file={serving_cert}"),
                format!("--tls-private-key-file={serving_key}"),
                format!("--client-ca-file={ca}"),
                "--authorization-mode=RBAC".to_owned(),
                "--service-cluster-ip-range=198.19.0.0/16".to_owned(),
                format!("--service-account-issuer=https://127.0.0.1:{port}"),
                format!("--service-account-key-file={sa_public}"),
                format!("--service-account-signing-key-file={sa_key}"),
                // Without a controller-manager no ServiceAccount would ever exist to admit pods.
                if for_pods {
                    "--enable-admission-plugins=ServiceAccount".to_owned()
                } else {
                    "--disable-admission-plugins=ServiceAccount".to_owned()
                },
                "--allow-privileged=true".to_owned(),
                "--profiling=false".to_owned(),
                format!("--cert-dir={}", dir.path().join("certs").display()),
            ],
            "kube-apiserver",
        );
        let plane = Self {
            dir,
            etcd,
            apiserver,
            port,
            ca_pem: pki.ca,
            admin_cert: pki.admin_cert,
            admin_key: pki.admin_key,
        };
        plane.wait_ready();
        plane
    }

    fn wait_ready(&self) {
        let cert = self.dir.path().join("admin.crt");
        let key = self.dir.path().join("admin.key");
        std::fs::write(&cert, &self.admin_cert).expect("write admin cert");
        std::fs::write(&key, &self.admin_key).expect("write admin key");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = Command::new("curl")
                .args(["-sf", "--cacert"])
                .arg(self.dir.path().join("ca.crt"))
                .arg("--cert")
                .arg(&cert)
                .arg("--key")
                .arg(&key)
                .arg(format!("https://127.0.0.1:{}/readyz", self.port))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready within 90 s (SC_K8S_LOGS=1 shows its logs)"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A kubeconfig for the admin (system:masters) user.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_with_user(
            "admin",
            &format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                base64(self.admin_cert.as_bytes()),
                base64(self.admin_key.as_bytes())
            ),
        )
    }

    /// A kubeconfig for a bearer token (a ServiceAccount's, from TokenRequest).
    pub fn kubeconfig_for_token(&self, token: &str) -> String {
        self.kubeconfig_with_user("token", &format!("    token: {token}\n"))
    }

    fn kubeconfig_with_user(&self, user: &str, credentials: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority-data: {}\nusers:\n- name: {user}\n  user:\n{credentials}contexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\n    namespace: default\ncurrent-context: test\n",
            self.port,
            base64(self.ca_pem.as_bytes()),
        )
    }

    /// A file of the control plane's PKI (`ca.crt`, `sa.key`, ...).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a kubeconfig file for child processes (kubectl, helm, the operator binary).
    pub fn kubeconfig_file(&self, yaml: &str, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).expect("write kubeconfig");
        path
    }

    /// A token of ServiceAccount `namespace/name` (TokenRequest), to act as its pods do.
    pub async fn service_account_token(client: &Client, namespace: &str, name: &str) -> String {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        use k8s_openapi::api::core::v1::ServiceAccount;
        let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), namespace);
        let request: TokenRequest =
            serde_json::from_value(serde_json::json!({"spec": {"expirationSeconds": 3600}}))
                .expect("TokenRequest");
        accounts
            .create_token_request(name, &kube::api::PostParams::default(), &request)
            .await
            .expect("TokenRequest")
            .status
            .expect("token")
            .token
    }

    pub async fn client(&self) -> Client {
        Self::client_from(&self.kubeconfig_yaml()).await
    }

    pub async fn client_from(kubeconfig: &str) -> Client {
        let kubeconfig = Kubeconfig::from_yaml(kubeconfig).expect("kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("client config");
        Client::try_from(config).expect("client")
    }

    /// The apiserver's own `/metrics` (for counting writes).
    pub async fn metrics(&self, client: &Client) -> String {
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .expect("request");
        client
            .request_text(request)
            .await
            .expect("apiserver metrics")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Marks every Deployment in `namespace` available with all replicas ready, as Strimzi's
/// MockKube does: there is no kubelet here.
pub fn fake_kubelet(client: Client, namespace: &str) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};
    use kube::runtime::{watcher, WatchStreamExt};
    use kube::{Api, ResourceExt};
    let namespace = namespace.to_owned();
    tokio::spawn(async move {
        let api: Api<Deployment> = Api::namespaced(client, &namespace);
        let mut stream = watcher(api.clone(), watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(deployment)) = stream.next().await {
            let replicas = deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1);
            let generation = deployment.metadata.generation;
            let status = deployment.status.clone().unwrap_or_default();
            if status.observed_generation == generation && status.ready_replicas == Some(replicas) {
                continue;
            }
            let patch = serde_json::json!({"status": {
                "observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
                "availableReplicas": replicas, "updatedReplicas": replicas,
                "conditions": [{"type": "Available", "status": "True", "reason": "FakeKubelet", "message": "no kubelet in tests"}]
            }});
            let _ = api
                .patch_status(
                    &deployment.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await;
        }
    })
}

/// Sum of `apiserver_request_total` samples for write verbs on `resource`.
pub fn write_requests(metrics: &str, resource: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("apiserver_request_total{"))
        .filter(|line| line.contains(&format!("resource=\"{resource}\"")))
        .filter(|line| {
            ["POST", "PUT", "PATCH", "DELETE", "APPLY"]
                .iter()
                .any(|verb| line.contains(&format!("verb=\"{verb}\"")))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
