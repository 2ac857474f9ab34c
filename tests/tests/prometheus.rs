//! The chart's monitoring for real: its alert rules pass `promtool test rules` on synthetic series,
//! and a real Prometheus server (Debian's `prometheus`) scrapes a running connector with the
//! chart's PodMonitor settings, evaluates the chart's rules, and answers every query of the chart's
//! Grafana dashboard with data.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::chart::{root, template};
use e2e_tests::http::get;
use e2e_tests::{free_port, ConnectorProcess, Mosquitto, PROMPTLY};
use e2e_tests::{ok, run};
use serde_json::{json, Value};

/// Prometheus' binaries, from Debian's `prometheus` package (tests/run.sh installs it).
fn prometheus_binary(name: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: apt-get install prometheus",
        path.display()
    );
    path
}

/// The chart's monitoring objects, rendered as tests/helm/values-monitoring.yaml sets them,
/// with PodMonitor scrapes every second so the test does not wait for the default 30 s.
fn rendered_monitoring() -> (Value, Value) {
    let values = root().join("tests/helm/values-monitoring.yaml");
    let output = template(
        &[&values],
        &[
            "--show-only",
            "templates/monitoring.yaml",
            "--set",
            "podMonitor.interval=1s",
        ],
    );
    let text = ok(&output, "helm template");
    let mut rule = None;
    let mut pod_monitor = None;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let object: Value = serde::Deserialize::deserialize(document).expect("rendered YAML");
        match object["kind"].as_str() {
            Some("PrometheusRule") => rule = Some(object),
            Some("PodMonitor") => pod_monitor = Some(object),
            _ => {}
        }
    }
    (
        rule.expect("a PrometheusRule"),
        pod_monitor.expect("a PodMonitor"),
    )
}

/// Writes the PrometheusRule's groups as a Prometheus rule file.
fn write_rule_file(rule: &Value, directory: &Path) -> PathBuf {
    let path = directory.join("rules.yaml");
    let groups = json!({"groups": rule["spec"]["groups"]});
    std::fs::write(&path, serde_yaml::to_string(&groups).unwrap()).unwrap();
    path
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let directory = tempfile::tempdir().unwrap();
    let (rule, _) = rendered_monitoring();
    let rules = write_rule_file(&rule, directory.path());
    let tests = directory.path().join("rules.test.yaml");
    std::fs::copy(root().join("tests/prometheus/rules.test.yaml"), &tests).unwrap();
    let promtool = prometheus_binary("promtool");
    let checked = ok(
        &run(Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .arg(&rules)),
        "promtool check rules",
    );
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    ok(
        &run(Command::new(&promtool).arg("test").arg("rules").arg(&tests)),
        "promtool test rules",
    );
}

/// A Prometheus server on loopback, stopped when dropped.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    directory: tempfile::TempDir,
}

impl Prometheus {
    fn start(config: &Value, rule_source: &Value) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let rules = write_rule_file(rule_source, directory.path());
        let mut config = config.clone();
        config["rule_files"] = json!([rules]);
        let config_path = directory.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(directory.path().join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_binary("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                directory.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Self {
            child,
            address,
            directory,
        };
        let deadline = Instant::now() + PROMPTLY;
        while !prometheus.ready() {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready: {}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    fn ready(&self) -> bool {
        TcpStream::connect(self.address).is_ok() && get(self.address, "/-/ready").0 == 200
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.directory.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `data` of an API answer, or a panic with its error.
    fn api(&self, path_and_query: &str) -> Value {
        let (status, body) = get(self.address, path_and_query);
        let answer: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
        assert_eq!(
            (status, &answer["status"]),
            (200, &json!("success")),
            "{path_and_query}: {body}"
        );
        answer["data"].clone()
    }

    /// The instant vector of a PromQL query.
    fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql)));
        data["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The sample values of an instant vector.
fn values(result: &[Value]) -> Vec<f64> {
    result
        .iter()
        .filter_map(|series| series["value"][1].as_str()?.parse().ok())
        .collect()
}

/// The scrape configuration that prometheus-operator generates from the chart's PodMonitor: job
/// `<namespace>/<name>`, the endpoint's path and interval, and the target's `namespace` and `pod`
/// labels (here one connector process stands in for the pod).
fn pod_monitor_scrape_config(pod_monitor: &Value, target: SocketAddr, pod: &str) -> Value {
    let endpoint = &pod_monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    json!({
        "global": {"evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": format!("{}/{}",
                pod_monitor["metadata"]["namespace"].as_str().unwrap(),
                pod_monitor["metadata"]["name"].as_str().unwrap()),
            "scrape_interval": endpoint["interval"],
            "metrics_path": endpoint["path"].as_str().unwrap_or("/metrics"),
            "static_configs": [{"targets": [target.to_string()],
                "labels": {"namespace": "plant", "pod": pod}}],
        }],
    })
}

/// A device that sends a good line every 50 ms, and every tenth time one that does not decode
/// and one longer than the connector's `maxFrameLength`, until stopped (at most 2 minutes).
fn device(address: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut stream = TcpStream::connect(address).expect("connect the device");
        let oversized = [b'9'; 100];
        for round in 0..2_400 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            stream.write_all(b"21.5\n").unwrap();
            if round % 10 == 0 {
                stream.write_all(b"\xff\xfe\n").unwrap();
                stream.write_all(&oversized).unwrap();
                stream.write_all(b"\n").unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_a_connector_evaluates_the_rules_and_feeds_the_dashboard() {
    let broker = Mosquitto::start();
    let config = json!({
        "name": "Scraped",
        "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0,
            "framing": {"type": "delimiter", "delimiter": "\n", "maxFrameLength": 64}},
        "devices": [{"address": "127.0.0.1:*", "deviceName": "Meter",
            "telemetry": [{"key": "temp", "byteFrom": 0, "byteTo": -1}]}]
    });
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let connector = ConnectorProcess::start_with(
        &config,
        broker.port(),
        &["--metrics-address", &metrics.to_string()],
    );
    connector.wait_for_log("connected to ThingsBoard");
    let stop = Arc::new(AtomicBool::new(false));
    let sender = device(connector.local_addr, stop.clone());

    let (rule, pod_monitor) = rendered_monitoring();
    let prometheus = Prometheus::start(
        &pod_monitor_scrape_config(&pod_monitor, metrics, "connector-0"),
        &rule,
    );

    // The dashboard's pod variable lists the connector, then every panel's query has data for it
    // (Grafana substitutes a single selected value as is). Rates need two scrapes in their window.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            root().join("charts/socket-connector-operator/dashboards/socket-connector.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let variable = &dashboard["templating"]["list"][0];
    assert_eq!(
        variable["query"],
        "label_values(socket_connector_mqtt_connected, pod)"
    );
    let queries: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            panel["targets"].as_array().unwrap().iter().map(|target| {
                (
                    panel["title"].as_str().unwrap().to_owned(),
                    target["expr"]
                        .as_str()
                        .unwrap()
                        .replace("$pod", "connector-0"),
                )
            })
        })
        .collect();
    assert_eq!(queries.len(), 7);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing: Vec<String>;
    loop {
        missing = queries
            .iter()
            .filter(|(_, promql)| {
                let found = values(&prometheus.query(promql));
                found.is_empty() || found.iter().any(|v| !v.is_finite())
            })
            .map(|(title, promql)| format!("{title}: {promql}"))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(missing.is_empty(), "no data for {missing:#?}");
    let pods = prometheus.api(&format!(
        "/api/v1/label/pod/values?match[]={}",
        encode("socket_connector_mqtt_connected")
    ));
    assert_eq!(pods, json!(["connector-0"]));

    // The numbers behind the panels are the device's traffic.
    let value = |promql: &str| values(&prometheus.query(promql));
    assert_eq!(value("min(socket_connector_mqtt_connected)"), [1.0]);
    // (A rate divides by its whole window, so with seconds of samples it is only above 0.)
    assert!(value(&queries[0].1)[0] > 0.0, "{}", queries[0].1);
    assert!(value("sum(rate(socket_connector_decode_errors_total[5m]))")[0] > 0.0);
    assert!(
        value(r#"sum(rate(socket_connector_dropped_total{reason="frame_too_long"}[5m]))"#)[0] > 0.0
    );

    // Prometheus evaluates every rule without error; the dropped frames fire RecordsDropped (it
    // has no `for`), naming the reason, and nothing else fires for a healthy connector.
    let deadline = Instant::now() + PROMPTLY;
    let firing = loop {
        let alerts = prometheus.api("/api/v1/alerts")["alerts"].clone();
        let firing: Vec<(String, String)> = alerts
            .as_array()
            .unwrap()
            .iter()
            .filter(|alert| alert["state"] == "firing")
            .map(|alert| {
                (
                    alert["labels"]["alertname"].as_str().unwrap().to_owned(),
                    alert["labels"]["reason"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        if !firing.is_empty() || Instant::now() > deadline {
            break firing;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        firing,
        [(
            "SocketConnectorRecordsDropped".to_owned(),
            "frame_too_long".to_owned()
        )]
    );
    let groups = prometheus.api("/api/v1/rules")["groups"].clone();
    let rules = groups[0]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 7);
    for rule in rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
}
