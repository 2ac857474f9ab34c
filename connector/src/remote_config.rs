//! Remote configuration from ThingsBoard's UI (`thingsboard.remoteConfiguration`): the connector
//! reports its running configuration in the gateway device's client attributes, and applies the
//! connector edits the UI saves in its shared attributes through the hot-reload path, so device
//! connections and the MQTT session stay. An edit that does not build, or that needs a restart
//! (another `socket` section, another name), is rejected and the running configuration kept.
//! The payloads are built in `connector_core::thingsboard::remote_config`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use rumqttc::QoS;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::clock::now_ms;
use crate::events::ConfigReload;
use crate::http::Health;
use crate::reload::{ReloadSummary, Reloader};
use crate::thingsboard::Publisher;
use connector_core::downlink::messages::GatewayShared;
use connector_core::load::load_value;
use connector_core::thingsboard::api::topic;
use connector_core::thingsboard::remote_config::{
    connector_edit, connector_report, gateway_report, shared_changes, ConnectorIdentity,
    SharedChange, UnechoedReports,
};

/// Remote configuration is on; the configuration it reports at start comes from this file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfiguration {
    pub config_file: PathBuf,
    /// When the file's content last changed (ms), when its modification time does not say
    /// (`--config-changed-at-ms`: a Kubernetes ConfigMap is written anew at every pod start).
    pub config_changed_at_ms: Option<i64>,
}

/// Where applied and rejected edits are said to come from, in logs.
const SOURCE: &str = "ThingsBoard (remote configuration)";

pub struct RemoteConfigurator {
    publisher: Publisher,
    qos: QoS,
    reloader: Reloader,
    identity: ConnectorIdentity,
    config_file: PathBuf,
    /// The client attribute that describes the running configuration.
    reported: Value,
    /// When the running configuration was made (ms): the file's modification time, or the `ts`
    /// of the UI edit. Only newer edits are applied, as the gateway compares them with its file.
    running_ts: i64,
    /// The reloader's generation `reported` describes; another one means the file was reloaded.
    generation: u64,
    /// The last `active_connectors` reported.
    active_connectors: Value,
    /// Reports a plain broker may still give back as pushes; they change nothing.
    unechoed: UnechoedReports,
    /// Whether `active_connectors` lists this connector: the device socket is open only then.
    active: watch::Sender<bool>,
    /// `/status` says where the running configuration came from.
    health: Arc<Health>,
    remote_logging_level: Option<Value>,
    next_request: u64,
}

impl RemoteConfigurator {
    pub fn new(
        settings: &RemoteConfiguration,
        connector_name: &str,
        publisher: Publisher,
        qos: QoS,
        reloader: Reloader,
        active: watch::Sender<bool>,
        health: Arc<Health>,
    ) -> Self {
        let (document, modified) = read_document(&settings.config_file, &reloader);
        let running_ts = settings.config_changed_at_ms.unwrap_or(modified);
        let file_name = settings
            .config_file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let identity = ConnectorIdentity::new(connector_name, &file_name, &document);
        let reported = connector_report(&identity, &document, running_ts);
        Self {
            publisher,
            qos,
            generation: reloader.generation(),
            reloader,
            active_connectors: json!([&identity.name]),
            unechoed: UnechoedReports::default(),
            active,
            health,
            identity,
            config_file: settings.config_file.clone(),
            reported,
            running_ts,
            remote_logging_level: None,
            next_request: 1,
        }
    }

    /// A new session: ask for the shared attributes (an edit made while the connector was away
    /// or before it started is applied from the answer), then report what runs.
    pub async fn connected(&mut self) {
        let request = format!(
            "{}{}",
            topic::GATEWAY_ATTRIBUTE_REQUEST_PREFIX,
            self.next_request
        );
        self.next_request += 1;
        self.publish_to(&request, json!({})).await;
        self.note_report("active_connectors", self.active_connectors.clone());
        self.publish(gateway_report(&self.active_connectors)).await;
        self.publish(self.reported.clone()).await;
    }

    /// Reports a configuration that a file reload installed.
    pub async fn check_file_reload(&mut self) {
        if self.reloader.generation() == self.generation {
            return;
        }
        self.generation = self.reloader.generation();
        let (document, _) = read_document(&self.config_file, &self.reloader);
        // Reloaded now (a changed file or SIGHUP): newer than every edit made before.
        self.running_ts = now_ms().max(self.running_ts);
        self.health.configured_from(None);
        self.reported = connector_report(&self.identity, &document, self.running_ts);
        self.publish(self.reported.clone()).await;
    }

    pub async fn shared(&mut self, update: GatewayShared) {
        let pushed = update.request_id.is_none();
        for change in shared_changes(&update.attributes) {
            match change {
                SharedChange::Connector { key, value } => self.edit(&key, &value).await,
                SharedChange::ActiveConnectors(list) => {
                    if !(pushed && self.is_echo("active_connectors", &list)) {
                        self.active_connectors(list).await;
                    }
                }
                SharedChange::RemoteLoggingLevel(level) => {
                    if pushed && self.is_echo("RemoteLoggingLevel", &level) {
                        continue;
                    }
                    if self.remote_logging_level.as_ref() != Some(&level) {
                        self.remote_logging_level = Some(level.clone());
                        self.note_report("RemoteLoggingLevel", level.clone());
                        self.publish(json!({ "RemoteLoggingLevel": level })).await;
                    }
                }
                SharedChange::Gateway(key) => {
                    info!(key, "gateway-wide setting from ThingsBoard not applied: this connector takes them from tb_gateway.json and its flags")
                }
                SharedChange::Deleted | SharedChange::Other(_) => {}
            }
        }
    }

    async fn active_connectors(&mut self, list: Value) {
        if list == self.active_connectors {
            return;
        }
        let Some(names) = list.as_array() else {
            // Not what ThingsBoard's UI writes: switching the devices off on it would be a guess.
            warn!(value = %list, "active_connectors from ThingsBoard is not a list of names; ignored");
            return;
        };
        let listed = names
            .iter()
            .any(|n| n.as_str() == Some(&self.identity.name));
        let switched = self.active.send_if_modified(|active| {
            let switched = *active != listed;
            *active = listed;
            switched
        });
        if switched && !listed {
            warn!(
                connector = %self.identity.name,
                "ThingsBoard lists this connector as inactive (active_connectors): its device socket is closed and its devices disconnected until it is listed again"
            );
        } else if switched {
            info!(connector = %self.identity.name, "ThingsBoard lists this connector as active again");
        }
        self.active_connectors = list.clone();
        self.note_report("active_connectors", list.clone());
        self.publish(json!({ "active_connectors": list })).await;
    }

    /// Notes a report about to be published, so that its echo through a plain broker is known.
    fn note_report(&mut self, key: &str, value: Value) {
        self.unechoed.sent(key, &value, Instant::now());
    }

    fn is_echo(&mut self, key: &str, value: &Value) -> bool {
        let echo = self.unechoed.is_echo(key, value, Instant::now());
        if echo {
            debug!(key, %value, "our own report heard back through the broker; ignored");
        }
        echo
    }

    async fn edit(&mut self, key: &str, value: &Value) {
        if key != self.identity.name {
            // Another connector of the same gateway device, or a new one made in the UI.
            debug!(key, "connector configuration for another connector ignored");
            return;
        }
        let edit = match connector_edit(value) {
            Ok(edit) => edit,
            Err(reason) => return rejected(&reason),
        };
        if edit.ts <= self.running_ts {
            debug!(
                ts = edit.ts,
                running = self.running_ts,
                "remote configuration not newer than the running one"
            );
            return;
        }
        if edit.name != self.identity.name {
            return rejected(&format!(
                "the connector is named {:?}; renaming it to {:?} needs a restart",
                self.identity.name, edit.name
            ));
        }
        let loaded = match load_value(edit.document) {
            Ok(loaded) => loaded,
            Err(error) => return rejected(&format!("invalid configuration: {error}")),
        };
        for warning in &loaded.warnings {
            warn!(source = SOURCE, "{warning}");
        }
        let outcome = self.reloader.apply(&loaded);
        ConfigReload {
            source: &SOURCE,
            outcome: outcome
                .as_ref()
                .map(ReloadSummary::changes)
                .map_err(String::as_str),
        }
        .emit();
        if outcome.is_ok() {
            self.health.configured_from(Some(edit.ts));
            self.running_ts = edit.ts;
            self.generation = self.reloader.generation();
            self.reported = edit.echo;
            self.publish(self.reported.clone()).await;
        }
    }

    async fn publish(&self, attributes: Value) {
        self.publish_to(topic::GATEWAY_ATTRIBUTES, attributes).await;
    }

    async fn publish_to(&self, topic: &str, payload: Value) {
        if !self
            .publisher
            .publish(topic, self.qos, payload.to_string())
            .await
        {
            warn!(
                topic,
                "remote configuration not reported: the session ended"
            );
        }
    }
}

/// The error is logged (and so counted in `<name>_ERRORS_COUNT`, the UI's Errors column) and the
/// reload counter's `rejected` goes up. Nothing is reported back, so the UI keeps showing the
/// edit as not applied.
fn rejected(reason: &str) {
    ConfigReload {
        source: &SOURCE,
        outcome: Err(reason),
    }
    .emit();
}

/// The file as it is now and its modification time; the running configuration when the file
/// cannot be read (it is reported as the connector loaded it).
fn read_document(path: &Path, reloader: &Reloader) -> (Value, i64) {
    let text = std::fs::read_to_string(path);
    let document = text
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| serde_json::to_value(&*reloader.current()).unwrap_or(json!({})));
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or_else(now_ms, |since| since.as_millis() as i64);
    (document, modified)
}
