//! A test peer playing ThingsBoard's side of the MQTT gateway API: it records everything the
//! connector publishes and answers the gateway's `getSessionLimits` RPC like ThingsBoard does.
//! It also plays the UI side of remote configuration: a store of the gateway device's shared
//! attributes, pushed on `v1/devices/me/attributes` when set and given in answer to the gateway's
//! attribute requests, as ThingsBoard answers them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, NetworkOptions, QoS};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One message the connector published.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "{}: payload is not JSON ({e}): {}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Topics ThingsBoard itself publishes to a gateway; the peer hears its own copies and drops them.
type Sent = Arc<Mutex<VecDeque<(String, Vec<u8>)>>>;
/// The gateway device's shared attributes, as ThingsBoard keeps them.
type Shared = Arc<Mutex<serde_json::Map<String, Value>>>;

pub struct ThingsBoardPeer {
    client: AsyncClient,
    received: mpsc::UnboundedReceiver<Message>,
    sent: Sent,
    shared: Shared,
    task: JoinHandle<()>,
}

/// ThingsBoard's answer to a gateway device's attribute request: `{}` asks for all, else
/// `sharedKeys` names them; an empty scope is left out.
fn attribute_answer(request: &Value, shared: &serde_json::Map<String, Value>) -> Value {
    let named: Option<Vec<&str>> = request["sharedKeys"]
        .as_str()
        .map(|keys| keys.split(',').collect());
    let asked_for_client_only = request.get("clientKeys").is_some() && named.is_none();
    if asked_for_client_only {
        return json!({});
    }
    let found: serde_json::Map<String, Value> = shared
        .iter()
        .filter(|(key, _)| {
            named
                .as_ref()
                .is_none_or(|names| names.contains(&key.as_str()))
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if found.is_empty() {
        json!({})
    } else {
        json!({ "shared": found })
    }
}

/// ThingsBoard's answer to `getSessionLimits` with its default settings (no rate limits).
pub fn session_limits() -> Value {
    let none = json!({"messages": null, "telemetryMessages": null, "telemetryDataPoints": null});
    json!({
        "maxPayloadSize": 65536,
        "maxInflightMessages": 100,
        "rateLimits": none,
        "gatewayRateLimits": none,
    })
}

/// Answers a `getSessionLimits` RPC of the connector, when `topic` and `payload` are one, with
/// [`session_limits`], as ThingsBoard does (the measuring side plays ThingsBoard).
pub fn answer_session_limits(client: &AsyncClient, topic: &str, payload: &[u8]) {
    let Some(id) = topic.strip_prefix("v1/devices/me/rpc/request/") else {
        return;
    };
    let request: Value = serde_json::from_slice(payload).unwrap_or_default();
    if request["method"] == "getSessionLimits" {
        let _ = client.try_publish(
            format!("v1/devices/me/rpc/response/{id}"),
            QoS::AtLeastOnce,
            false,
            session_limits().to_string(),
        );
    }
}

/// An MQTT client of the measuring side on 127.0.0.1:`port`: packets up to 16 MiB, at most
/// `inflight` unacknowledged publishes, and PUBACKs sent at once (no Nagle delay of its own).
pub fn mqtt_client(id: String, port: u16, inflight: u16) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(16 << 20, 16 << 20);
    options.set_inflight(inflight);
    let (client, mut event_loop) = AsyncClient::new(options, 1024);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    event_loop.set_network_options(network);
    (client, event_loop)
}

impl ThingsBoardPeer {
    /// Connects to the broker and subscribes to every topic before returning; answers
    /// `getSessionLimits` with ThingsBoard's defaults.
    pub async fn connect(port: u16) -> Self {
        Self::connect_answering(port, Some(session_limits())).await
    }

    /// Like [`Self::connect`], answering `getSessionLimits` with `limits`, or never (None).
    pub async fn connect_answering(port: u16, limits: Option<Value>) -> Self {
        let id = format!(
            "tb-peer-{:08x}",
            std::process::id() ^ crate::free_port() as u32
        );
        let (client, mut event_loop) = mqtt_client(id, port, 100);
        let (tx, received) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let sent: Sent = Arc::default();
        let shared: Shared = Arc::default();
        let store = shared.clone();
        let responder = client.clone();
        let echoes = sent.clone();
        client
            .subscribe("#", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let task = tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(publish))) => {
                        let message = Message {
                            topic: publish.topic.clone(),
                            payload: publish.payload.to_vec(),
                        };
                        if is_echo(&echoes, &message) {
                            continue;
                        }
                        if let Some(id) = message
                            .topic
                            .strip_prefix("v1/devices/me/attributes/request/")
                        {
                            let request: Value =
                                serde_json::from_slice(&message.payload).unwrap_or_default();
                            let answer = attribute_answer(&request, &store.lock().unwrap());
                            let topic = format!("v1/devices/me/attributes/response/{id}");
                            answer_as_thingsboard(&responder, &echoes, topic, &answer).await;
                        }
                        if let Some(id) = message.topic.strip_prefix("v1/devices/me/rpc/request/") {
                            let request: Value =
                                serde_json::from_slice(&message.payload).unwrap_or_default();
                            if let (true, Some(limits)) =
                                (request["method"] == "getSessionLimits", &limits)
                            {
                                let topic = format!("v1/devices/me/rpc/response/{id}");
                                answer_as_thingsboard(&responder, &echoes, topic, limits).await;
                            }
                        }
                        if tx.send(message).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(crate::PROMPTLY, subscribed_rx)
            .await
            .expect("peer subscription timed out")
            .expect("peer task ended");
        Self {
            client,
            received,
            sent,
            shared,
            task,
        }
    }

    /// Stores a shared attribute of the gateway device without telling it (saved while the
    /// gateway was away): it learns it from its next attribute request.
    pub fn store_shared(&self, key: &str, value: Value) {
        self.shared.lock().unwrap().insert(key.to_owned(), value);
    }

    /// Saves a shared attribute of the gateway device, as ThingsBoard's UI does, and pushes the
    /// change to the gateway.
    pub async fn set_shared(&self, key: &str, value: Value) {
        self.store_shared(key, value.clone());
        self.publish("v1/devices/me/attributes", json!({ key: value }))
            .await;
    }

    /// Publishes as ThingsBoard would (attribute updates, RPC, attribute responses).
    pub async fn publish(&self, topic: &str, payload: Value) {
        let payload = payload.to_string().into_bytes();
        self.sent
            .lock()
            .unwrap()
            .push_back((topic.to_owned(), payload.clone()));
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }

    /// The next message, or None after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Message> {
        tokio::time::timeout(timeout, self.received.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next message on a `v1/gateway/` topic, skipping the gateway device's own topics.
    pub async fn next_gateway(&mut self) -> Message {
        loop {
            let message = self
                .next(crate::PROMPTLY)
                .await
                .expect("no gateway message arrived in time");
            if message.topic.starts_with("v1/gateway/") {
                return message;
            }
        }
    }

    /// The next message on `topic`, skipping others; panics after `timeout`.
    pub async fn next_on_within(&mut self, topic: &str, timeout: Duration) -> Message {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("nothing arrived on {topic} within {timeout:?}"));
            if message.topic == topic {
                return message;
            }
        }
    }

    /// The next message on `topic`, skipping others; panics when none arrives promptly.
    pub async fn next_on(&mut self, topic: &str) -> Message {
        self.next_on_within(topic, crate::PROMPTLY).await
    }

    /// Gateway-API messages until `count` of them arrived on `topic`; panics on timeout.
    pub async fn until_count(&mut self, topic: &str, count: usize) -> Vec<Message> {
        let mut all = Vec::new();
        let mut seen = 0;
        while seen < count {
            let message = self.next_gateway().await;
            if message.topic == topic {
                seen += 1;
            }
            all.push(message);
        }
        all
    }

    /// Telemetry values `(device, key, value)` in arrival order until `count` arrived; panics
    /// when they do not arrive promptly.
    pub async fn telemetry_values(&mut self, count: usize) -> Vec<(String, String, Value)> {
        let mut found = Vec::new();
        while found.len() < count {
            let message = self.next_on("v1/gateway/telemetry").await;
            for (device, _, values) in telemetry_entries(&message) {
                for (key, value) in values.as_object().cloned().unwrap_or_default() {
                    found.push((device.clone(), key, value));
                }
            }
        }
        found
    }

    /// Everything that arrives until nothing has for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Message> {
        let mut all = Vec::new();
        while let Some(message) = self.next(quiet).await {
            all.push(message);
        }
        all
    }
}

impl Drop for ThingsBoardPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes ThingsBoard's answer, remembering it so that its echo is dropped.
async fn answer_as_thingsboard(client: &AsyncClient, sent: &Sent, topic: String, answer: &Value) {
    let payload = answer.to_string().into_bytes();
    sent.lock()
        .unwrap()
        .push_back((topic.clone(), payload.clone()));
    let _ = client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await;
}

fn is_echo(sent: &Sent, message: &Message) -> bool {
    let mut sent = sent.lock().unwrap();
    match sent
        .iter()
        .position(|(topic, payload)| *topic == message.topic && *payload == message.payload)
    {
        Some(index) => {
            sent.remove(index);
            true
        }
        None => false,
    }
}

/// One telemetry value as [`ThingsBoardPeer::telemetry_values`] gives it.
pub fn value(device: &str, key: &str, value: &str) -> (String, String, Value) {
    (device.to_owned(), key.to_owned(), json!(value))
}

/// Telemetry entries of a gateway telemetry payload, flattened: `(device, ts, values)`.
pub fn telemetry_entries(message: &Message) -> Vec<(String, i64, Value)> {
    assert_eq!(message.topic, "v1/gateway/telemetry");
    let mut entries = Vec::new();
    for (device, list) in message.json().as_object().expect("object").clone() {
        for entry in list.as_array().expect("list of {ts, values}") {
            let ts = entry["ts"].as_i64().expect("ts");
            entries.push((device.clone(), ts, entry["values"].clone()));
        }
    }
    entries
}
