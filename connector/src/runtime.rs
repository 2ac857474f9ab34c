//! Wiring: binds the device socket, starts the MQTT session and the uplink task, and shuts them
//! down in order (stop reading, flush the queue, disconnect devices, close the session).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::downlink::{Downlink, DownlinkContext};
use crate::http::Health;
use crate::last_values::LastValues;
use crate::live::Live;
use crate::queue::{Queue, QueueSettings};
use crate::reload::Reloader;
use crate::remote_config::{RemoteConfiguration, RemoteConfigurator};
use crate::supervisor::{Failures, Supervisor, TaskFailure};
use crate::thingsboard::renames::Renames;
use crate::thingsboard::session::Session;
use crate::thingsboard::statistics::StatisticsTask;
use crate::thingsboard::uplink::{Batching, Uplink, UplinkSettings};
use crate::thingsboard::{link, remote_logs, MqttSettings, Publisher};
use crate::transport::device_socket::{self, SocketPlan};
use crate::transport::limits::ConnectionLimits;
use crate::transport::{self, client, DeviceLinks, Ingest};
use connector_core::config::{LogLevel, ReportStrategy, SocketKind};
use connector_core::load::LoadedConfig;
use connector_core::thingsboard::limits::SessionLimits;

/// Gateway-wide settings, what `tb_gateway.json` holds for the ThingsBoard gateway.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub mqtt: MqttSettings,
    /// `thingsboard.reportStrategy`: the last level of the report-strategy cascade.
    pub report_strategy: ReportStrategy,
    /// Overrides the config's `name`, like `connectors[].name` in `tb_gateway.json`.
    pub connector_name: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; none when absent.
    pub metrics_address: Option<SocketAddr>,
    /// The uplink queue between conversion and ThingsBoard.
    pub queue: QueueSettings,
    /// Devices connected in ThingsBoard at most (names read from frames can be many); the longest
    /// silent are disconnected beyond it.
    pub max_devices: usize,
    /// How converted messages are gathered into publishes (`minPackSendDelayMS`).
    pub batching: Batching,
    /// ThingsBoard's UI may change the configuration (`thingsboard.remoteConfiguration`).
    pub remote_configuration: Option<RemoteConfiguration>,
    /// `--log-level`: wins over the configuration's `logLevel`, also after reloads.
    pub log_level_override: Option<LogLevel>,
    /// How often the gateway statistics are sent; none: not at all.
    pub statistics_period: Option<Duration>,
    /// `thingsboard.handleDeviceRenaming`: devices renamed in ThingsBoard go on under their new
    /// names.
    pub handle_device_renaming: bool,
}

/// Default of [`GatewaySettings::max_devices`].
pub const DEFAULT_MAX_DEVICES: usize = 10_000;

/// Name used when neither the config nor the settings give one.
pub const DEFAULT_CONNECTOR_NAME: &str = "Socket Connector";
/// Converted messages waiting for the uplink task; when full, device reads wait.
const QUEUE_CAPACITY: usize = 8192;
/// Attribute requests waiting to be published; beyond this they are dropped with a warning.
const ATTRIBUTE_REQUEST_CAPACITY: usize = 1024;

/// A started connector.
pub struct Connector {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    listener: JoinHandle<()>,
    uplink: JoinHandle<()>,
    link: JoinHandle<()>,
    reloader: Reloader,
    queue: Arc<Queue>,
    supervisor: Supervisor,
    failures: Failures,
}

impl Connector {
    /// Binds the device socket and starts talking to ThingsBoard. Fails if the socket cannot be
    /// bound; an unreachable ThingsBoard is retried in the background.
    pub async fn start(loaded: &LoadedConfig, settings: GatewaySettings) -> anyhow::Result<Self> {
        let config = &loaded.config;
        crate::events::initialize_series();
        let live = Arc::new(Live::new(loaded));
        let socket = &config.socket;
        let address = transport::bind_address(&socket.address, socket.port)
            .await
            .with_context(|| format!("cannot resolve socket.address {:?}", socket.address))?;
        let connector_name: Arc<str> = settings
            .connector_name
            .clone()
            .or_else(|| config.name.clone())
            .unwrap_or_else(|| DEFAULT_CONNECTOR_NAME.to_owned())
            .into();

        // First, so that a queue directory another process holds fails the start.
        let uplink_queue = Queue::open(settings.queue.clone())?;
        let (supervisor, failures) = Supervisor::new();
        let (stop, stop_rx) = watch::channel(false);
        let health = Arc::new(Health::default());
        if let Some(address) = settings.metrics_address {
            let listener = probes::bind(address)
                .await
                .with_context(|| format!("cannot serve metrics on {address}"))?;
            let serve = probes::serve(listener, health.clone(), stop_rx.clone());
            supervisor.spawn("probes", serve);
        }
        let (queue, queue_rx) = mpsc::channel(QUEUE_CAPACITY);
        let (requests, requests_rx) = mpsc::channel(ATTRIBUTE_REQUEST_CAPACITY);
        health.watch_queue(&queue);
        health.watch_uplink_queue(uplink_queue.clone());
        let links = Arc::new(DeviceLinks::new(
            socket.kind,
            config.devices.len(),
            settings.max_devices,
        ));
        let limits = ConnectionLimits::from_config(socket);
        let ingest = Ingest {
            live: live.clone(),
            queue,
            requests,
            links: links.clone(),
        };
        let plan = match (socket.kind, &loaded.built.client) {
            (SocketKind::Tcp, Some(plan)) => SocketPlan::Client(client::ClientSettings {
                host: socket.address.clone(),
                port: socket.port,
                plan: plan.clone(),
                idle_timeout: limits.idle_timeout,
            }),
            (SocketKind::Tcp, None) => SocketPlan::TcpServer {
                address,
                tls: match &socket.tls {
                    Some(tls) => {
                        Some(transport::tls::acceptor(tls).map_err(|(key, message)| {
                            anyhow::anyhow!("socket.tls.{key}: {message}")
                        })?)
                    }
                    None => None,
                },
                limits,
            },
            (SocketKind::Udp, _) => SocketPlan::Udp {
                address,
                receive_buffer: loaded.built.receive_buffer,
            },
        };
        let device_socket = plan.bind()?;
        let local_addr = device_socket.local_addr()?.unwrap_or(address);
        // ThingsBoard's `active_connectors` (remote configuration) closes and reopens it.
        let (active, active_rx) = watch::channel(true);
        let listener = supervisor.spawn(
            "listener",
            device_socket::run(
                plan,
                device_socket,
                ingest,
                health.clone(),
                stop_rx.clone(),
                active_rx.clone(),
            ),
        );
        if loaded.built.client.is_some() {
            info!(connector = %connector_name, address = %local_addr, "TCP client socket is up, connecting to the device server");
        } else {
            info!(connector = %connector_name, address = %local_addr, "{} socket is up", socket.kind);
        }

        let (client, event_loop) = link::client(&settings.mqtt)
            .map_err(|e| anyhow::anyhow!("cannot set up the connection to ThingsBoard: {e}"))?;
        let (rotate, rotation) = watch::channel(0u64);
        let watched = settings.mqtt.watched_files();
        if !watched.is_empty() {
            let watch = crate::reload::watch_files(watched, rotate, stop_rx.clone());
            supervisor.spawn("credential files", watch);
        }
        let (publisher, direct) = Publisher::channel();
        let (downlink_events, downlink_rx) = mpsc::unbounded_channel();
        let (limits, limits_rx) = watch::channel(SessionLimits::default());
        let session = Session {
            client,
            event_loop,
            settings: settings.mqtt.clone(),
            queue: uplink_queue.clone(),
            direct,
            downlink: downlink_events,
            limits: limits_rx.clone(),
            health: health.clone(),
            stop: stop_rx,
            rotation,
        };
        let link = supervisor.spawn("session", session.run());
        let last_values = Arc::new(LastValues::default());
        let renames = Arc::new(Renames::open(
            settings.handle_device_renaming,
            settings.queue.storage.directory(),
        ));
        let reloader = Reloader::new(live.clone(), links.clone())
            .with_log_level_override(settings.log_level_override);
        let remote = settings.remote_configuration.as_ref().map(|remote| {
            info!(file = %remote.config_file.display(), "remote configuration from ThingsBoard is on");
            RemoteConfigurator::new(
                remote,
                &connector_name,
                publisher.clone(),
                settings.mqtt.qos,
                reloader.clone(),
                active,
                health,
            )
        });
        let downlink = Downlink::new(
            DownlinkContext {
                publisher: publisher.clone(),
                live: live.clone(),
                links: links.clone(),
                last_values: last_values.clone(),
                limits,
                connector_name: connector_name.clone(),
                renames: renames.clone(),
            },
            remote,
        );
        supervisor.spawn("downlink", downlink.run(downlink_rx, requests_rx));
        let logs = crate::logging::remote::take();
        if let Some(period) = settings.statistics_period {
            let statistics = StatisticsTask {
                publisher: publisher.clone(),
                qos: settings.mqtt.qos,
                connector_name: connector_name.clone(),
                period,
                queue: uplink_queue.clone(),
                errors: logs
                    .as_ref()
                    .map(|logs| logs.counters.clone())
                    .unwrap_or_default(),
            };
            supervisor.spawn("statistics", statistics.run(stop.subscribe()));
        }
        if let Some(logs) = logs {
            let remote_logs = remote_logs::run(
                publisher,
                settings.mqtt.qos,
                connector_name.clone(),
                settings.mqtt.max_payload,
                logs,
                stop.subscribe(),
            );
            supervisor.spawn("remote logs", remote_logs);
        }
        let uplink_queue_handle = uplink_queue.clone();
        let uplink = Uplink::new(
            uplink_queue,
            UplinkSettings {
                max_payload: settings.mqtt.max_payload,
                connector_name,
                report_strategy: settings.report_strategy,
                max_devices: settings.max_devices,
                batching: settings.batching,
                renames,
            },
            last_values,
            limits_rx,
        );
        let uplink = supervisor.spawn("uplink", uplink.run(queue_rx, active_rx));
        Ok(Self {
            local_addr,
            stop,
            listener,
            uplink,
            link,
            reloader,
            queue: uplink_queue_handle,
            supervisor,
            failures,
        })
    }

    /// Spawns another core task under the connector's supervision.
    pub fn supervise<F>(&self, task: &'static str, future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.supervisor.spawn(task, future);
    }

    /// Resolves when a core task has panicked: the connector no longer moves data and the
    /// process should end with a failure.
    pub async fn failed(&mut self) -> TaskFailure {
        self.failures.next().await
    }

    /// Applies new configurations to the running connector (hot reload).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The bound device socket (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops reading from devices, publishes what was read, disconnects the devices from
    /// ThingsBoard and closes the session, giving up after `grace`.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let drained = async {
            let _ = self.listener.await;
            let _ = self.uplink.await;
            let _ = self.link.await;
        };
        let in_time = tokio::time::timeout(grace, drained).await.is_ok();
        let (records, bytes) = self.queue.depth();
        match (in_time, records, self.queue.settings().storage.is_disk()) {
            (true, 0, _) => info!("every queued record was acknowledged by ThingsBoard"),
            (_, _, true) => warn!(
                records,
                bytes,
                "shutdown with records not yet acknowledged; they are replayed at the next start"
            ),
            (_, _, false) => warn!(
                records,
                bytes,
                grace_ms = grace.as_millis() as u64,
                "shutdown grace period over; records not yet acknowledged are lost (memory queue)"
            ),
        }
    }
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
