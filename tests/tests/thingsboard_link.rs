//! The link to ThingsBoard against a Mosquitto that enforces what ThingsBoard's MQTT transport
//! does: TLS with a CA made here (rcgen), MQTT basic credentials (`password_file`,
//! `allow_anonymous false`) and X.509 client certificates (`require_certificate`,
//! `use_identity_as_username`). One test per credential type delivers data, through flags and
//! through an unchanged `tb_gateway.json`; a wrong CA, a certificate for another host, a wrong
//! password and an expired client certificate are refused with the reason and no crash; changed
//! credential files reconnect without a restart and the data queued meanwhile arrives.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use e2e_tests::http::{get, sample};
use e2e_tests::peer::telemetry_entries;
use e2e_tests::pki::{Issued, TestCa};
use e2e_tests::{free_port, ConnectorProcess, Mosquitto, ThingsBoardPeer, PROMPTLY};
use serde_json::{json, Value};

/// A CA, ThingsBoard's server certificate and gateway client certificates.
struct Pki {
    authority: TestCa,
    ca: String,
    server: Issued,
    client: Issued,
    expired_client: Issued,
}

impl Pki {
    /// A CA whose server certificate names `names` (DNS names, or IP addresses).
    fn new(names: &[&str]) -> Self {
        let authority = TestCa::new("ThingsBoard test CA");
        Self {
            ca: authority.pem.clone(),
            server: authority.server(names),
            client: authority.client("gateway-1", None, false),
            expired_client: authority.client("gateway-1", None, true),
            authority,
        }
    }

    /// Mosquitto lines for a TLS listener with this PKI's files in `dir`.
    fn tls_listener(&self, dir: &std::path::Path) -> Vec<String> {
        for (name, content) in [
            ("ca.pem", &self.ca),
            ("server.pem", &self.server.pem),
            ("server.key", &self.server.key_pem),
        ] {
            std::fs::write(dir.join(name), content).unwrap();
        }
        vec![
            format!("cafile {}", dir.join("ca.pem").display()),
            format!("certfile {}", dir.join("server.pem").display()),
            format!("keyfile {}", dir.join("server.key").display()),
        ]
    }
}

/// A TCP device on a free port; the config's one device turns "21.5" into `temp`.
fn socket_json(port: u16) -> Value {
    json!({
        "name": "Link test",
        "socket": {"type": "TCP", "address": "127.0.0.1", "port": port},
        "devices": [{"address": "*:*", "deviceName": "Press 1", "telemetry": [{"key": "temp"}]}]
    })
}

/// Starts the connector with `files` in its directory and `args` (`{dir}` is that directory),
/// `/metrics` on a free port.
fn start(files: &[(&str, String)], args: &[&str]) -> (ConnectorProcess, SocketAddr) {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics_arg = metrics.to_string();
    let mut all = vec!["--metrics-address", metrics_arg.as_str()];
    all.extend_from_slice(args);
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, c.as_bytes())).collect();
    (ConnectorProcess::start_args(&files, &all), metrics)
}

/// A connector sending to ThingsBoard's TLS port `tls_port` with `token`, trusting `ca`.
fn start_trusting(ca: &str, tls_port: u16, token: &str) -> (ConnectorProcess, SocketAddr) {
    start(
        &[
            ("socket.json", socket_json(free_port()).to_string()),
            ("ca.pem", ca.to_owned()),
        ],
        &[
            "--config",
            "{dir}/socket.json",
            "--tb-host",
            "127.0.0.1",
            "--tb-port",
            &tls_port.to_string(),
            "--tb-ca-cert",
            "{dir}/ca.pem",
            "--token",
            token,
        ],
    )
}

async fn expect_data(peer: &mut ThingsBoardPeer, connector: &ConnectorProcess, value: &str) {
    let mut device = TcpStream::connect(connector.local_addr).unwrap();
    device.write_all(value.as_bytes()).unwrap();
    expect_arrives(peer, value).await;
}

async fn expect_arrives(peer: &mut ThingsBoardPeer, value: &str) {
    let deadline = tokio::time::Instant::now() + PROMPTLY * 2;
    loop {
        let message = peer
            .next_on_within(
                "v1/gateway/telemetry",
                deadline - tokio::time::Instant::now(),
            )
            .await;
        if telemetry_entries(&message)
            .iter()
            .any(|(device, _, values)| device == "Press 1" && values["temp"] == value)
        {
            return;
        }
    }
}

fn failures(metrics: SocketAddr, reason: &str) -> f64 {
    let (_, text) = get(metrics, "/metrics");
    sample(
        &text,
        &format!("socket_connector_mqtt_connect_failures_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

/// The `thingsboard` part of the connector's `GET /status`.
fn status(metrics: SocketAddr) -> Value {
    let status: Value = serde_json::from_str(&get(metrics, "/status").1).unwrap();
    status["thingsboard"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn access_token_over_tls_checked_against_the_ca() {
    let pki = Pki::new(&["127.0.0.1"]);
    let tls_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut lines = pki.tls_listener(dir.path());
    lines.push("allow_anonymous true".into());
    let broker = Mosquitto::start_with_listener(tls_port, &lines);
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let (connector, metrics) = start_trusting(&pki.ca, tls_port, "gateway-token");
    let connected = connector.wait_for_log("connected to ThingsBoard");
    assert_eq!(connected["tls"], true, "{connected}");
    expect_data(&mut peer, &connector, "21.5").await;
    assert_eq!(status(metrics), json!({"connected": true}));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_or_host_name_is_refused_with_the_reason() {
    let pki = Pki::new(&["thingsboard.example"]);
    let other = Pki::new(&["127.0.0.1"]);
    let tls_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut lines = pki.tls_listener(dir.path());
    lines.push("allow_anonymous true".into());
    let _broker = Mosquitto::start_with_listener(tls_port, &lines);
    let (wrong_ca, metrics) = start_trusting(&other.ca, tls_port, "t");
    let failed = wrong_ca.wait_for_log("ThingsBoard connection failed");
    assert_eq!(failed["reason"], "tls_unknown_ca", "{failed}");
    assert!(failed["message"]
        .as_str()
        .unwrap()
        .contains("not signed by the given CA"));
    assert!(failures(metrics, "tls_unknown_ca") >= 1.0);
    assert_eq!(status(metrics)["reason"], "tls_unknown_ca");
    // The right CA, but the certificate names another host than the one connected to.
    let (wrong_name, metrics) = start_trusting(&pki.ca, tls_port, "t");
    let failed = wrong_name.wait_for_log("ThingsBoard connection failed");
    assert_eq!(failed["reason"], "tls_name_mismatch", "{failed}");
    assert!(failures(metrics, "tls_name_mismatch") >= 1.0);
    drop(wrong_ca);
    drop(wrong_name);
}

#[tokio::test(flavor = "multi_thread")]
async fn username_and_password_and_a_rotated_password_file() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "").unwrap();
    let status_code = std::process::Command::new("mosquitto_passwd")
        .args(["-b"])
        .arg(&passwd)
        .args(["gateway", "s3cret"])
        .status()
        .expect("mosquitto_passwd (Debian package mosquitto)");
    assert!(status_code.success());
    let lines = vec![
        "allow_anonymous false".to_owned(),
        format!("password_file {}", passwd.display()),
    ];
    let broker = Mosquitto::start_with_listener(port, &lines);
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let tb_port = port.to_string();
    let (connector, metrics) = start(
        &[
            ("socket.json", socket_json(free_port()).to_string()),
            ("password", "wrong\n".into()),
        ],
        &[
            "--config",
            "{dir}/socket.json",
            "--tb-host",
            "127.0.0.1",
            "--tb-port",
            &tb_port,
            "--tb-username",
            "gateway",
            "--tb-password-file",
            "{dir}/password",
        ],
    );
    let failed = connector.wait_for_log("ThingsBoard connection failed");
    assert!(
        ["not_authorized", "bad_credentials"].contains(&failed["reason"].as_str().unwrap()),
        "{failed}"
    );
    // Data read while the credentials are wrong waits in the queue.
    let mut device = TcpStream::connect(connector.local_addr).unwrap();
    device.write_all(b"20.0").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(connector.directory().join("password"), "s3cret\n").unwrap();
    connector.wait_for_log("credential or certificate files changed");
    connector.wait_for_log("connected to ThingsBoard");
    expect_arrives(&mut peer, "20.0").await;
    assert!(failures(metrics, "not_authorized") + failures(metrics, "bad_credentials") >= 1.0);
    assert_eq!(status(metrics), json!({"connected": true}));
}

fn x509_listener(pki: &Pki, dir: &std::path::Path) -> Vec<String> {
    let mut lines = pki.tls_listener(dir);
    lines.extend([
        "require_certificate true".to_owned(),
        "use_identity_as_username true".to_owned(),
        "allow_anonymous false".to_owned(),
    ]);
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn x509_client_certificate_an_expired_one_refused_then_rotated() {
    let pki = Pki::new(&["127.0.0.1"]);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start_with_listener(port, &x509_listener(&pki, dir.path()));
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let tb_port = port.to_string();
    let (connector, metrics) = start(
        &[
            ("socket.json", socket_json(free_port()).to_string()),
            ("ca.pem", pki.ca.clone()),
            ("gateway.pem", pki.expired_client.pem.clone()),
            ("gateway.key", pki.expired_client.key_pem.clone()),
        ],
        &[
            "--config",
            "{dir}/socket.json",
            "--tb-host",
            "127.0.0.1",
            "--tb-port",
            &tb_port,
            "--tb-ca-cert",
            "{dir}/ca.pem",
            "--tb-client-cert",
            "{dir}/gateway.pem",
            "--tb-client-key",
            "{dir}/gateway.key",
        ],
    );
    let failed = connector.wait_for_log("ThingsBoard connection failed");
    assert_eq!(
        failed["reason"], "tls_client_certificate_rejected",
        "{failed}"
    );
    assert!(failures(metrics, "tls_client_certificate_rejected") >= 1.0);
    // cert-manager renews the Secret: the files change in place, the connector reconnects.
    std::fs::write(connector.directory().join("gateway.pem"), &pki.client.pem).unwrap();
    std::fs::write(
        connector.directory().join("gateway.key"),
        &pki.client.key_pem,
    )
    .unwrap();
    connector.wait_for_log("connected to ThingsBoard");
    expect_data(&mut peer, &connector, "22.5").await;
    // A second renewal of a working certificate reconnects too.
    let renewed = pki.authority.client("gateway-1", None, false);
    std::fs::write(connector.directory().join("gateway.pem"), renewed.pem).unwrap();
    std::fs::write(connector.directory().join("gateway.key"), renewed.key_pem).unwrap();
    connector.wait_for_logs("connected to ThingsBoard", 2);
    expect_data(&mut peer, &connector, "23.5").await;
}

/// A `thingsboard.security` section, the broker listener that enforces it, and its files.
type SecurityCase<'a> = (Value, Vec<String>, Vec<(&'a str, String)>);

/// An unchanged `tb_gateway.json` of each security type, with `connectors` naming the
/// `socket.json`: `socket-connector run --gateway-config tb_gateway.json` and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn tb_gateway_json_of_each_security_type() {
    let pki = Pki::new(&["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "").unwrap();
    assert!(std::process::Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(&passwd)
        .args(["gw-user", "gw-pass"])
        .status()
        .unwrap()
        .success());
    let cases: Vec<SecurityCase> = vec![
        (
            json!({"type": "tlsAccessToken", "accessToken": "gateway-token", "caCert": "ca.pem"}),
            {
                let mut lines = pki.tls_listener(dir.path());
                lines.push("allow_anonymous true".into());
                lines
            },
            vec![("ca.pem", pki.ca.clone())],
        ),
        (
            json!({"type": "usernamePassword", "clientId": "gw-client", "username": "gw-user", "password": "gw-pass"}),
            vec![
                "allow_anonymous false".to_owned(),
                format!("password_file {}", passwd.display()),
            ],
            vec![],
        ),
        (
            json!({"type": "tlsPrivateKey", "caCert": "ca.pem", "cert": "gateway.pem", "privateKey": "gateway.key"}),
            x509_listener(&pki, dir.path()),
            vec![
                ("ca.pem", pki.ca.clone()),
                ("gateway.pem", pki.client.pem.clone()),
                ("gateway.key", pki.client.key_pem.clone()),
            ],
        ),
    ];
    for (security, lines, mut files) in cases {
        let port = free_port();
        let broker = Mosquitto::start_with_listener(port, &lines);
        let mut peer = ThingsBoardPeer::connect(broker.port()).await;
        let gateway = json!({
            "thingsboard": {"host": "127.0.0.1", "port": port, "security": security, "qos": 1,
                            "remoteShell": false, "statistics": {"enable": true}},
            "storage": {"type": "memory", "max_records_count": 100000},
            "connectors": [{"type": "socket", "name": "Socket Connector", "configuration": "socket.json"}]
        });
        files.push(("tb_gateway.json", gateway.to_string()));
        files.push(("socket.json", socket_json(free_port()).to_string()));
        let (connector, _) = start(&files, &["--gateway-config", "{dir}/tb_gateway.json"]);
        connector.wait_for_log("connected to ThingsBoard");
        let ignored = connector.wait_for_log("not supported by this connector, ignored");
        assert!(
            ignored["message"]
                .as_str()
                .unwrap()
                .starts_with("thingsboard."),
            "{ignored}"
        );
        expect_data(&mut peer, &connector, "19.5").await;
        // connectorName comes from tb_gateway.json.
        drop(connector);
        drop(broker);
    }
}

/// What the operator renders for a `clientCertificate` connector (the projected Secret's files
/// and the flags naming them) connects to an X.509 listener: the kubelet's mounts are
/// directories of this test, everything else is the Deployment's container as rendered.
#[tokio::test(flavor = "multi_thread")]
async fn the_operators_x509_pod_connects() {
    use socket_connector_operator::build::{children, Child, Defaults};
    use socket_connector_operator::crd::SocketConnector;

    let pki = Pki::new(&["127.0.0.1"]);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start_with_listener(port, &x509_listener(&pki, dir.path()));
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let mut spec = socket_connector_operator::fixtures::x509_spec();
    spec.thingsboard.host = "127.0.0.1".to_owned();
    spec.thingsboard.port = Some(i32::from(port));
    spec.connector.0["socket"]["port"] = free_port().into();
    spec.connector.0["devices"][0]["deviceName"] = "Press 1".into();
    spec.metrics_port = Some(i32::from(free_port()));
    let mut sc = SocketConnector::new("line-1", spec);
    sc.metadata.namespace = Some("plant".to_owned());
    let plan = socket_connector_operator::validate::validate(&sc.spec, "plant", "line-1").unwrap();
    let rendered = children(&sc, &plan, &Defaults::default());
    let config = rendered
        .iter()
        .find_map(|child| match child {
            Child::ConfigMap(map) => Some(map.data.clone().unwrap()["socket.json"].clone()),
            _ => None,
        })
        .unwrap();
    let container = rendered
        .iter()
        .find_map(|child| match child {
            Child::Deployment(deployment) => Some(
                socket_connector_operator::fixtures::pod_spec(deployment).containers[0].clone(),
            ),
            _ => None,
        })
        .unwrap();
    // `run --log-format json` is what the harness passes itself.
    let args: Vec<String> = container.args.unwrap()[1..]
        .join("\n")
        .replace("--log-format\njson", "")
        .replace("/etc/socket-connector", "{dir}")
        .replace("/var/run/secrets/thingsboard", "{dir}")
        .split('\n')
        .filter(|arg| !arg.is_empty())
        .map(str::to_owned)
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let connector = ConnectorProcess::start_args(
        &[
            ("socket.json", config.as_bytes()),
            ("ca.crt", pki.ca.as_bytes()),
            ("tls.crt", pki.client.pem.as_bytes()),
            ("tls.key", pki.client.key_pem.as_bytes()),
        ],
        &args,
    );
    connector.wait_for_log("connected to ThingsBoard");
    let mut device = TcpStream::connect(("127.0.0.1", connector.local_addr.port())).unwrap();
    device.write_all(b"24.5").unwrap();
    expect_arrives(&mut peer, "24.5").await;
}
