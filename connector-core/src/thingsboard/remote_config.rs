//! Remote configuration from ThingsBoard's UI, as gateway 3.8.5 speaks it, without IO: what the
//! connector reports in the gateway device's client attributes (so that the UI's Connectors page
//! shows the running configuration), and how a UI edit (a shared attribute) becomes a `socket.json`
//! to check and apply and the value reported back. The exchange is described in
//! docs/compatibility.md ("Remote configuration").

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// What the UI is told the gateway's version is: its forms (report strategy, connector modes)
/// depend on it, and this connector reads what the forms of 3.8.5 write.
pub const UI_GATEWAY_VERSION: &str = "3.8.5";

/// The connector type the UI knows this connector by.
pub const CONNECTOR_TYPE: &str = "socket";

/// Settings the gateway keeps at the top level of a connector's attribute, beside
/// `configurationJson` rather than in it.
const TOP_LEVEL_KEYS: [&str; 4] = [
    "logLevel",
    "enableRemoteLogging",
    "reportStrategy",
    "configVersion",
];

/// Shared attributes of the gateway device that configure the gateway rather than a connector;
/// this connector reports none of them and applies none (docs/compatibility.md).
const GATEWAY_KEYS: [&str; 4] = [
    "general_configuration",
    "storage_configuration",
    "grpc_configuration",
    "logs_configuration",
];

/// Who the connector is in the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorIdentity {
    pub name: String,
    /// `configurationJson.id`: the UI finds the connector by it.
    pub id: String,
    /// The `configuration` file name the UI shows.
    pub file_name: String,
}

impl ConnectorIdentity {
    /// The gateway writes a random id into the file when it has none; a connector that cannot
    /// write its file (a Kubernetes ConfigMap) derives a stable one from the name instead.
    pub fn new(name: &str, file_name: &str, document: &Value) -> Self {
        let id = document
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
            });
        Self {
            name: name.to_owned(),
            id,
            file_name: file_name.to_owned(),
        }
    }
}

/// The gateway-wide client attributes reported at start: `active_connectors` is the list
/// ThingsBoard last sent, at first this connector alone.
pub fn gateway_report(active_connectors: &Value) -> Value {
    json!({
        "active_connectors": active_connectors,
        "Version": UI_GATEWAY_VERSION,
    })
}

/// The connector's client attribute for `document` (a `socket.json` as loaded) at `ts`:
/// `{"<name>": {"type": "socket", ..., "configurationJson": {...}, "logLevel": ..., "ts": ...}}`.
pub fn connector_report(identity: &ConnectorIdentity, document: &Value, ts: i64) -> Value {
    let mut configuration = document.as_object().cloned().unwrap_or_default();
    let mut top = Map::new();
    top.insert("type".into(), CONNECTOR_TYPE.into());
    top.insert("name".into(), identity.name.clone().into());
    top.insert("configuration".into(), identity.file_name.clone().into());
    top.insert("id".into(), identity.id.clone().into());
    top.insert(
        "configVersion".into(),
        configuration.remove("configVersion").unwrap_or(Value::Null),
    );
    top.insert("grpc_key".into(), Value::Null);
    let log_level = configuration.remove("logLevel").unwrap_or("INFO".into());
    let remote_logging = configuration
        .remove("enableRemoteLogging")
        .unwrap_or(false.into());
    let report_strategy = configuration.remove("reportStrategy");
    configuration.insert("name".into(), identity.name.clone().into());
    configuration.insert("id".into(), identity.id.clone().into());
    top.insert("configurationJson".into(), Value::Object(configuration));
    top.insert("logLevel".into(), log_level);
    top.insert("enableRemoteLogging".into(), remote_logging);
    if let Some(strategy) = report_strategy {
        top.insert("reportStrategy".into(), strategy);
    }
    top.insert("ts".into(), ts.into());
    json!({ &identity.name: top })
}

/// How long a report of ours may take to come back through a plain broker. Echoes arrive in
/// milliseconds; ThingsBoard sends none, so a report is forgotten after this.
pub const ECHO_WINDOW: Duration = Duration::from_secs(3);

/// Reports of ours (`active_connectors`, `RemoteLoggingLevel`) not heard back yet. A plain MQTT
/// broker (Mosquitto, where ThingsBoard is played in tests) delivers the connector's own
/// client-attribute publishes on the topic ThingsBoard pushes shared attributes on. With two
/// reports in flight, say `["A"]` at connect and `[]` from the answer at start, the older echo
/// would switch the connector back, it would report again, and the two echoes would chase each
/// other for ever. A broker gives our publishes back in the order sent, so a push equal to the
/// oldest report of its key still waiting is that echo.
#[derive(Debug, Default)]
pub struct UnechoedReports {
    waiting: VecDeque<(String, Value, Instant)>,
}

impl UnechoedReports {
    pub fn sent(&mut self, key: &str, value: &Value, now: Instant) {
        self.forget_older_than(now);
        self.waiting.push_back((key.to_owned(), value.clone(), now));
    }

    /// Whether a push of `key: value` is the echo of a report of ours; the echo is used up.
    pub fn is_echo(&mut self, key: &str, value: &Value, now: Instant) -> bool {
        self.forget_older_than(now);
        let Some(oldest) = self.waiting.iter().position(|(k, _, _)| k == key) else {
            return false;
        };
        let echo = self.waiting[oldest].1 == *value;
        if echo {
            self.waiting.remove(oldest);
        }
        echo
    }

    fn forget_older_than(&mut self, now: Instant) {
        while let Some((_, _, sent)) = self.waiting.front() {
            if now.saturating_duration_since(*sent) < ECHO_WINDOW {
                break;
            }
            self.waiting.pop_front();
        }
    }
}

/// One key of a shared-attribute update of the gateway device, sorted by what it is for.
#[derive(Debug, Clone, PartialEq)]
pub enum SharedChange {
    /// A connector's configuration, as the UI saved it.
    Connector { key: String, value: Value },
    /// The names of the connectors that should run.
    ActiveConnectors(Value),
    /// The remote log level of the gateway's own loggers.
    RemoteLoggingLevel(Value),
    /// Deleted shared attributes (the gateway ignores these too).
    Deleted,
    /// A gateway-wide section (`general_configuration`, ...), not applied here.
    Gateway(String),
    /// Another shared attribute of the gateway device, not a configuration.
    Other(String),
}

/// Sorts an update: `{"<key>": <value>, ...}` pushed by ThingsBoard, or the `shared` part of an
/// attribute response.
pub fn shared_changes(update: &Map<String, Value>) -> Vec<SharedChange> {
    update
        .iter()
        .map(|(key, value)| match key.as_str() {
            "active_connectors" => SharedChange::ActiveConnectors(value.clone()),
            "RemoteLoggingLevel" => SharedChange::RemoteLoggingLevel(value.clone()),
            "deleted" => SharedChange::Deleted,
            key if GATEWAY_KEYS.contains(&key) => SharedChange::Gateway(key.to_owned()),
            _ if value.get("configurationJson").is_some() || value.get("type").is_some() => {
                SharedChange::Connector {
                    key: key.clone(),
                    value: value.clone(),
                }
            }
            _ => SharedChange::Other(key.clone()),
        })
        .collect()
}

/// A connector edit from the UI, ready to check and apply.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorEdit {
    pub name: String,
    /// When the UI saved it (ms); an edit not newer than the running configuration is not applied.
    pub ts: i64,
    /// The `socket.json` to load: `configurationJson` with the top-level settings put back.
    pub document: Value,
    /// What is reported back once applied: the value as received, `configurationJson` completed
    /// as the gateway completes the file it writes. The UI counts the edit as applied when it
    /// sees this with a `ts` at least the edit's.
    pub echo: Value,
}

/// Reads a connector value the UI saved. `Err` when it cannot be a socket connector's.
pub fn connector_edit(value: &Value) -> Result<ConnectorEdit, String> {
    let object = value
        .as_object()
        .ok_or("the connector value is not a JSON object")?;
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .ok_or("the connector value has no \"name\"")?;
    match object.get("type").and_then(Value::as_str) {
        Some(CONNECTOR_TYPE) => {}
        Some(other) => {
            return Err(format!(
                "connector type {other:?}: this connector runs only \"socket\""
            ))
        }
        None => return Err("the connector value has no \"type\"".to_owned()),
    }
    let configuration = object
        .get("configurationJson")
        .and_then(Value::as_object)
        .ok_or("the connector value has no \"configurationJson\" object")?;
    let ts = object.get("ts").and_then(Value::as_i64).unwrap_or(0);

    let mut document = configuration.clone();
    document.insert("name".into(), name.into());
    for key in TOP_LEVEL_KEYS {
        if let Some(setting) = object.get(key).filter(|v| !v.is_null()) {
            document.insert(key.into(), setting.clone());
        }
    }

    let mut reported = configuration.clone();
    reported.insert("name".into(), name.into());
    for key in ["logLevel", "enableRemoteLogging", "id", "configVersion"] {
        if let Some(setting) = object.get(key) {
            reported.insert(key.into(), setting.clone());
        }
    }
    // As the gateway: the report strategy lives at the top level of a socket connector's value.
    reported.remove("reportStrategy");
    let mut echo = object.clone();
    echo.insert("configurationJson".into(), Value::Object(reported));

    Ok(ConnectorEdit {
        name: name.to_owned(),
        ts,
        document: Value::Object(document),
        echo: json!({ name: echo }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ConnectorIdentity {
        ConnectorIdentity::new("Socket Connector", "socket.json", &json!({}))
    }

    #[test]
    fn two_reports_in_flight_are_both_recognised_when_they_come_back_in_order() {
        let start = Instant::now();
        let mut reports = UnechoedReports::default();
        reports.sent("active_connectors", &json!(["A"]), start);
        reports.sent("active_connectors", &json!([]), start);
        reports.sent("RemoteLoggingLevel", &json!("DEBUG"), start);
        let soon = start + Duration::from_millis(5);
        assert!(reports.is_echo("RemoteLoggingLevel", &json!("DEBUG"), soon));
        assert!(reports.is_echo("active_connectors", &json!(["A"]), soon));
        assert!(reports.is_echo("active_connectors", &json!([]), soon));
        // Every echo was used up: the same values again come from ThingsBoard.
        assert!(!reports.is_echo("active_connectors", &json!([]), soon));
        assert!(!reports.is_echo("RemoteLoggingLevel", &json!("DEBUG"), soon));
    }

    #[test]
    fn a_push_that_differs_from_the_oldest_report_is_from_thingsboard() {
        let start = Instant::now();
        let mut reports = UnechoedReports::default();
        reports.sent("active_connectors", &json!(["A"]), start);
        assert!(!reports.is_echo("active_connectors", &json!([]), start));
        assert!(reports.is_echo("active_connectors", &json!(["A"]), start));
    }

    #[test]
    fn a_report_not_heard_back_within_the_window_is_forgotten() {
        // ThingsBoard echoes nothing: a UI edit after the window equal to a report is applied.
        let start = Instant::now();
        let mut reports = UnechoedReports::default();
        reports.sent("active_connectors", &json!(["A"]), start);
        assert!(!reports.is_echo("active_connectors", &json!(["A"]), start + ECHO_WINDOW));
    }

    #[test]
    fn the_report_moves_settings_to_the_top_level_as_the_gateway() {
        let document = json!({
            "name": "From file", "logLevel": "DEBUG", "reportStrategy": {"type": "ON_CHANGE"},
            "socket": {"type": "TCP", "port": 50000}, "devices": []
        });
        let report = connector_report(&identity(), &document, 1_700_000_000_000);
        let value = &report["Socket Connector"];
        assert_eq!(value["type"], "socket");
        assert_eq!(value["configuration"], "socket.json");
        assert_eq!(value["logLevel"], "DEBUG");
        assert_eq!(value["enableRemoteLogging"], false);
        assert_eq!(value["reportStrategy"], json!({"type": "ON_CHANGE"}));
        assert_eq!(value["ts"], 1_700_000_000_000i64);
        let configuration = &value["configurationJson"];
        assert_eq!(configuration["name"], "Socket Connector");
        assert_eq!(configuration["id"], value["id"]);
        assert_eq!(configuration["socket"]["port"], 50000);
        for moved in ["logLevel", "reportStrategy", "enableRemoteLogging"] {
            assert!(configuration.get(moved).is_none(), "{moved}");
        }
    }

    #[test]
    fn the_id_is_the_files_or_stable_per_name() {
        let from_file = ConnectorIdentity::new("A", "a.json", &json!({"id": "abc"}));
        assert_eq!(from_file.id, "abc");
        let derived = ConnectorIdentity::new("A", "a.json", &json!({}));
        assert_eq!(derived, ConnectorIdentity::new("A", "a.json", &json!({})));
        assert_ne!(
            derived.id,
            ConnectorIdentity::new("B", "a.json", &json!({})).id
        );
        assert_eq!(derived.id.len(), 36);
    }

    #[test]
    fn an_edit_puts_the_top_level_settings_back_into_the_document() {
        let saved = json!({
            "mode": "basic", "name": "Socket Connector", "type": "socket",
            "enableRemoteLogging": true, "logLevel": "DEBUG", "configuration": "socketConnector.json",
            "reportStrategy": {"type": "ON_RECEIVED"},
            "configurationJson": {"name": "Socket Connector", "id": "x", "socket": {"port": 1},
                                  "devices": [], "reportStrategy": {"type": "ON_CHANGE"}},
            "configVersion": "3.8.5", "ts": 1796150084474i64
        });
        let edit = connector_edit(&saved).expect("edit");
        assert_eq!(edit.ts, 1796150084474);
        assert_eq!(edit.document["logLevel"], "DEBUG");
        assert_eq!(edit.document["enableRemoteLogging"], true);
        assert_eq!(
            edit.document["reportStrategy"],
            json!({"type": "ON_RECEIVED"})
        );
        assert_eq!(edit.document["socket"]["port"], 1);
        let echo = &edit.echo["Socket Connector"];
        assert_eq!(echo["ts"], saved["ts"]);
        assert_eq!(echo["mode"], "basic");
        assert_eq!(echo["configurationJson"]["logLevel"], "DEBUG");
        assert_eq!(echo["configurationJson"]["configVersion"], "3.8.5");
        assert!(echo["configurationJson"].get("reportStrategy").is_none());
    }

    #[test]
    fn values_that_are_no_socket_connector_are_refused() {
        let cases = [
            (json!("text"), "not a JSON object"),
            (json!({"type": "socket"}), "no \"name\""),
            (json!({"name": "A"}), "no \"type\""),
            (json!({"name": "A", "type": "modbus"}), "runs only"),
            (
                json!({"name": "A", "type": "socket", "configurationJson": 3}),
                "configurationJson",
            ),
        ];
        for (value, expected) in cases {
            let error = connector_edit(&value).expect_err("refused");
            assert!(error.contains(expected), "{value}: {error}");
        }
    }

    #[test]
    fn shared_updates_are_sorted_by_purpose() {
        let update = json!({
            "Socket Connector": {"name": "Socket Connector", "type": "socket", "configurationJson": {}},
            "active_connectors": ["Socket Connector"],
            "RemoteLoggingLevel": "DEBUG",
            "deleted": ["Old"],
            "general_configuration": {},
            "firmwareVersion": "1.2",
        });
        let changes = shared_changes(update.as_object().expect("object"));
        assert!(
            matches!(&changes[0], SharedChange::Connector { key, .. } if key == "Socket Connector")
        );
        assert_eq!(
            changes[1],
            SharedChange::ActiveConnectors(json!(["Socket Connector"]))
        );
        assert_eq!(changes[2], SharedChange::RemoteLoggingLevel(json!("DEBUG")));
        assert_eq!(changes[3], SharedChange::Deleted);
        assert_eq!(
            changes[4],
            SharedChange::Gateway("general_configuration".into())
        );
        assert_eq!(changes[5], SharedChange::Other("firmwareVersion".into()));
    }
}
