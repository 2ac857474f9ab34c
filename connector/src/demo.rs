//! `socket-connector demo`: an embedded MQTT broker (rumqttd) standing in for ThingsBoard, the
//! connector with `examples/socket.json`, and a simulated device. Prints every gateway-API message
//! ThingsBoard would receive.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use rumqttc::QoS;
use rumqttd::{Broker, Notification};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::runtime::{shutdown_signal, Connector, GatewaySettings};
use crate::thingsboard::link::{Auth, Secret};
use crate::thingsboard::MqttSettings;
use connector_core::config::{ReportStrategy, SocketKind};
use connector_core::load::{load_file, load_str};

/// The built-in configuration (`examples/socket.json`).
pub const EXAMPLE_CONFIG: &str = include_str!("../../examples/socket.json");

pub struct DemoOptions {
    pub duration: Option<Duration>,
    pub config: Option<PathBuf>,
}

pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let mut loaded = match &options.config {
        Some(path) => load_file(path)?,
        None => load_str(EXAMPLE_CONFIG)?,
    };
    // A free port, so the demo never clashes with a running connector.
    loaded.config.socket.port = 0;
    if loaded.config.socket.kind != SocketKind::Tcp {
        bail!("the demo's simulated device speaks TCP; give a TCP socket.json");
    }

    let broker_port = free_port()?;
    start_broker(broker_port)?;
    println!("embedded MQTT broker (stands in for ThingsBoard) on 127.0.0.1:{broker_port}");

    let settings = GatewaySettings {
        mqtt: MqttSettings {
            host: Ipv4Addr::LOCALHOST.to_string(),
            port: broker_port,
            auth: Auth::AccessToken(Secret::Value("demo-gateway-token".to_owned())),
            tls: None,
            client_id: "socket-connector-demo".to_owned(),
            qos: QoS::AtLeastOnce,
            keep_alive: Duration::from_secs(30),
            max_payload: 8196,
        },
        report_strategy: ReportStrategy::global(None),
        connector_name: None,
        metrics_address: None,
        queue: Default::default(),
        max_devices: crate::runtime::DEFAULT_MAX_DEVICES,
        batching: Default::default(),
        remote_configuration: None,
        log_level_override: None,
        statistics_period: None,
        handle_device_renaming: true,
    };
    let connector = Connector::start(&loaded, settings).await?;
    let device_addr = connector.local_addr();
    println!(
        "connector listening on TCP {device_addr}; simulated device sends a frame every second"
    );
    println!("messages ThingsBoard receives:");

    let simulator = tokio::spawn(simulate_device(device_addr));
    match options.duration {
        Some(duration) => {
            tokio::select! {
                _ = tokio::time::sleep(duration) => {}
                _ = shutdown_signal() => {}
            }
        }
        None => shutdown_signal().await,
    }
    simulator.abort();
    connector.shutdown(Duration::from_secs(5)).await;
    // Let the printer show the disconnect messages.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free port")?;
    Ok(listener.local_addr()?.port())
}

/// Starts rumqttd on a std thread (its router is blocking) with a local link that prints every
/// message under `v1/`.
fn start_broker(port: u16) -> anyhow::Result<()> {
    let broker_config = json!({
        "id": 0,
        "router": {"max_connections": 100, "max_outgoing_packet_count": 200,
                   "max_segment_size": 10485760, "max_segment_count": 10},
        "v4": {"1": {"name": "demo", "listen": format!("127.0.0.1:{port}"),
                     "next_connection_delay_ms": 1,
                     "connections": {"connection_timeout_ms": 60000, "max_payload_size": 1048576,
                                     "max_inflight_count": 200, "dynamic_filters": true}}}
    });
    let broker_config: rumqttd::Config =
        serde_json::from_value(broker_config).context("embedded broker configuration")?;
    let mut broker = Broker::new(broker_config);
    let (mut link_tx, mut link_rx) = broker.link("demo-printer").context("broker link")?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                eprintln!("embedded broker stopped: {e}");
            }
        })?;
    link_tx.subscribe("v1/#").context("subscribe")?;
    std::thread::Builder::new()
        .name("mqtt-printer".into())
        .spawn(move || loop {
            match link_rx.recv() {
                Ok(Some(Notification::Forward(forward))) => {
                    let topic = String::from_utf8_lossy(&forward.publish.topic);
                    let payload = String::from_utf8_lossy(&forward.publish.payload);
                    println!("  {topic:<24} {payload}");
                }
                Ok(_) => {}
                Err(_) => break,
            }
        })?;
    Ok(())
}

/// A thermometer: `TTTTTHHfirmware`, e.g. `21.5045v1.4.2`, once a second.
async fn simulate_device(connector: SocketAddr) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(connector).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for step in 0u64.. {
        tick.tick().await;
        let temperature = 21.0 + (step % 10) as f64 * 0.25;
        let humidity = 40 + step % 7;
        let frame = format!("{temperature:05.2}{humidity:02}v1.4.2");
        stream.write_all(frame.as_bytes()).await?;
    }
    Ok(())
}
