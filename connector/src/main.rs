//! `socket-connector`: the command line. Parses flags and environment, then hands over to the
//! library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use connector_core::config::{LogLevel, ReportStrategyConfig};
use connector_core::load::load_file;
use socket_connector::gateway::{self, Overrides};
use socket_connector::logging::{self, LogFormat};
use socket_connector::queue::{Fsync, FullPolicy};
use socket_connector::runtime::{shutdown_signal, Connector};
use socket_connector::{demo, read_coalescing, reload, tools};
use tracing::{error, info, warn};

/// The static musl binary of the image allocates with mimalloc: musl's own allocator costs 1.1 to
/// 1.55 times the CPU of glibc's for the small allocations of every frame. The image sets
/// `MIMALLOC_ARENA_EAGER_COMMIT=0` and `MIMALLOC_PURGE_DELAY=0`, which keep its memory at musl's
/// (docs/benchmarks.md#the-images-allocator). glibc builds keep the system allocator, which
/// mimalloc beat by less and for 17-20 MiB more memory.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ThingsBoard-compatible socket connector: devices talk raw TCP or UDP to it, it sends their
/// data to ThingsBoard over the MQTT gateway API.
#[derive(Debug, Parser)]
#[command(name = "socket-connector", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log output: `human` lines or `json` objects, on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Overrides the config's `logLevel` (TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL, NONE).
    #[arg(long, global = true, env = "LOG_LEVEL", value_parser = parse_log_level)]
    log_level: Option<LogLevel>,
    /// Threads that serve devices and ThingsBoard (default: the cores the process may use,
    /// CPU limits included). 1 costs least CPU for fleets of slow devices
    /// (docs/benchmarks.md#read-coalescing); more keep reading while one waits on the disk queue.
    #[arg(
        long,
        global = true,
        env = "SOCKET_CONNECTOR_WORKER_THREADS",
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    worker_threads: Option<u16>,
    /// When frames come faster than this, a worker that runs out of work waits out the rest of
    /// these milliseconds before it sleeps on the sockets, so that one wake-up reads the frames
    /// of many devices (docs/benchmarks.md#read-coalescing); every frame waits at most about
    /// this long for its read. 0 reads every frame the moment it arrives. Default: 3 with one
    /// worker, 2 with several.
    #[arg(
        long,
        global = true,
        env = "SOCKET_CONNECTOR_READ_COALESCING_MS",
        value_parser = clap::value_parser!(u64).range(0..=100)
    )]
    read_coalescing_ms: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the connector with a ThingsBoard `socket.json`.
    Run(Box<RunArgs>),
    /// Show data flowing with nothing installed: an embedded MQTT broker, the connector with
    /// `examples/socket.json` and a simulated device; prints what ThingsBoard would receive.
    Demo(DemoArgs),
    /// Check a `socket.json` (every error with its JSON path), list what ThingsBoard would ignore
    /// or mis-handle, and show what sample frames would publish. Exit 0 when valid, 2 when not.
    Validate(ValidateArgs),
    /// Rewrite an old-format `socket.json` into the current format (stdout, or --output).
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// The `socket.json` to check.
    config: PathBuf,
    /// A sample message in hex (`0x` and spaces allowed); repeat for several.
    #[arg(long = "sample")]
    samples: Vec<String>,
    /// A sample message as text (e.g. "2345"); repeat for several.
    #[arg(long = "sample-text")]
    sample_texts: Vec<String>,
    /// Decode samples only for the devices whose address filter matches this ip:port.
    #[arg(long)]
    peer: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
struct MigrateArgs {
    /// The old-format `socket.json`.
    config: PathBuf,
    /// Write here instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The connector configuration: a ThingsBoard gateway `socket.json` (current or old format).
    /// Default: the socket connector's `configuration` in `--gateway-config`.
    #[arg(long, short, env = "SOCKET_CONNECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// ThingsBoard's main gateway file, `tb_gateway.json`, read unchanged: ThingsBoard's host,
    /// port, credentials and TLS, payload size, report strategy, storage, the socket connector.
    /// Flags and environment variables override what it says.
    #[arg(long, env = "TB_GATEWAY_CONFIG")]
    gateway_config: Option<PathBuf>,
    #[command(flatten)]
    thingsboard: ThingsBoardArgs,
    #[command(flatten)]
    queue: QueueArgs,
    /// Seconds to finish sending and disconnect devices after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = 10, env = "SHUTDOWN_GRACE_SECONDS")]
    shutdown_grace_seconds: u64,
}

/// The uplink queue (docs/reliability.md): in memory unless a directory is given.
#[derive(Debug, Args)]
struct QueueArgs {
    /// Keep the queue on disk in this directory, replayed after a restart (one connector per
    /// directory). Without it (and without a file or sqlite storage in --gateway-config) the
    /// queue is in memory and lost when the process ends.
    #[arg(long, env = "QUEUE_DIRECTORY")]
    queue_directory: Option<PathBuf>,
    /// Most bytes queued for ThingsBoard (payload, plus 128 bytes per record in memory).
    /// Default: 64 MiB in memory, 1 GiB on disk.
    #[arg(long, env = "QUEUE_MAX_BYTES")]
    queue_max_bytes: Option<u64>,
    /// When the queue is full: `block` (stop reading devices; TCP flow control slows them),
    /// `drop-oldest` or `drop-newest`. Drops are counted in socket_connector_dropped_total.
    #[arg(long, env = "QUEUE_FULL_POLICY", default_value = "block")]
    queue_full_policy: FullPolicy,
    /// When the disk queue is forced to the device: `never` (a process crash loses nothing, a
    /// power loss may), `always` (after every write), or an interval such as `1000ms`.
    #[arg(long, env = "QUEUE_FSYNC", default_value = "1000ms")]
    queue_fsync: Fsync,
}

/// Where ThingsBoard is and how to talk to it (the `thingsboard` section of `tb_gateway.json`).
#[derive(Debug, Args)]
struct ThingsBoardArgs {
    /// ThingsBoard MQTT host (default: localhost).
    #[arg(long, env = "TB_HOST")]
    tb_host: Option<String>,
    /// ThingsBoard MQTT port (default 1883; 8883 means TLS).
    #[arg(long, env = "TB_PORT")]
    tb_port: Option<u16>,
    /// Access token of the gateway device in ThingsBoard; sent as the MQTT username.
    /// Prefer the environment variable or --token-file, so the token stays out of process
    /// listings.
    #[arg(long, env = "TB_ACCESS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the access token (a mounted Secret); read again when it changes.
    #[arg(long, env = "TB_ACCESS_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// MQTT basic credentials: the username.
    #[arg(long, env = "TB_USERNAME")]
    tb_username: Option<String>,
    /// MQTT basic credentials: the password (prefer TB_PASSWORD or --tb-password-file).
    #[arg(long, env = "TB_PASSWORD", hide_env_values = true)]
    tb_password: Option<String>,
    /// A file holding the password; read again when it changes.
    #[arg(long, env = "TB_PASSWORD_FILE")]
    tb_password_file: Option<PathBuf>,
    /// PEM file of the CA that signed ThingsBoard's certificate (turns TLS on; without it TLS
    /// uses the system's CAs).
    #[arg(long, env = "TB_CA_CERT")]
    tb_ca_cert: Option<PathBuf>,
    /// X.509 authentication: the gateway's client certificate (PEM; turns TLS on).
    #[arg(long, env = "TB_CLIENT_CERT")]
    tb_client_cert: Option<PathBuf>,
    /// X.509 authentication: the client certificate's private key (PEM).
    #[arg(long, env = "TB_CLIENT_KEY")]
    tb_client_key: Option<PathBuf>,
    /// TLS with the system's CAs (also implied by a CA, a client certificate or port 8883).
    #[arg(long, env = "TB_TLS")]
    tb_tls: bool,
    /// MQTT client id; must be unique per running connector. Default: `socket-connector-<random>`.
    #[arg(long, env = "TB_CLIENT_ID")]
    client_id: Option<String>,
    /// MQTT QoS of published data: 0 (at most once) or 1 (at least once, the default).
    #[arg(long, env = "TB_QOS", value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: Option<u8>,
    /// Gateway-wide report strategy, the last level of the cascade, as JSON:
    /// '{"type": "ON_CHANGE_OR_REPORT_PERIOD", "reportPeriod": 60000}'.
    #[arg(long, env = "TB_REPORT_STRATEGY", value_parser = parse_report_strategy)]
    report_strategy: Option<ReportStrategyConfig>,
    /// Connector name in ThingsBoard (the `connectorName` attribute); default: the name in
    /// --gateway-config, else the config's `name`.
    #[arg(long, env = "CONNECTOR_NAME")]
    connector_name: Option<String>,
    /// Largest MQTT payload in bytes; larger batches are split (default 8196).
    #[arg(long, env = "TB_MAX_PAYLOAD_SIZE")]
    max_payload_size: Option<usize>,
    /// MQTT keep-alive in seconds.
    #[arg(long, env = "TB_KEEP_ALIVE_SECONDS", default_value_t = 60)]
    keep_alive_seconds: u64,
    /// Devices connected in ThingsBoard at most (devices named by their frames can be many);
    /// beyond it the longest silent are disconnected and forgotten until they send again.
    #[arg(long, env = "MAX_DEVICES")]
    max_devices: Option<usize>,
    /// After the first message of a batch, milliseconds to wait for more before publishing
    /// (ThingsBoard's `minPackSendDelayMS`, at most 1000; default 0 with one worker, 1 with
    /// several; 0 publishes what is waiting).
    #[arg(long, env = "TB_MIN_PACK_SEND_DELAY_MS")]
    min_pack_send_delay_ms: Option<u64>,
    /// Messages in one batch at most; a full batch is published at once (ThingsBoard's
    /// `minPackSizeToSend`; default 4096).
    #[arg(long, env = "TB_MIN_PACK_SIZE_TO_SEND")]
    min_pack_size_to_send: Option<usize>,
    /// Serve Prometheus `/metrics` and the `/healthz`, `/readyz` and `/status` probes on this
    /// address, e.g. 0.0.0.0:9100. Off when absent.
    #[arg(long, env = "METRICS_ADDRESS")]
    metrics_address: Option<std::net::SocketAddr>,
    /// Let ThingsBoard's UI change the connector's configuration (its Connectors page), as
    /// `thingsboard.remoteConfiguration: true` in tb_gateway.json does.
    #[arg(long, env = "TB_REMOTE_CONFIGURATION")]
    remote_configuration: bool,
    /// With remote configuration: when the --config file's content last changed (ms since the
    /// epoch), if not its modification time. An edit from ThingsBoard older than this is not
    /// applied at start. The operator sets it from the SocketConnector.
    #[arg(long, env = "CONFIG_CHANGED_AT_MS")]
    config_changed_at_ms: Option<i64>,
    /// Send the gateway statistics ThingsBoard's gateway dashboard plots every this many seconds
    /// (default: tb_gateway.json's thingsboard.statistics, else 60); 0 turns them off.
    #[arg(long, env = "TB_STATISTICS_PERIOD_SECONDS")]
    statistics_period_seconds: Option<u64>,
}

impl RunArgs {
    fn overrides(&self) -> Overrides {
        let tb = &self.thingsboard;
        Overrides {
            gateway_config: self.gateway_config.clone(),
            config: self.config.clone(),
            host: tb.tb_host.clone(),
            port: tb.tb_port,
            token: tb.token.clone(),
            token_file: tb.token_file.clone(),
            username: tb.tb_username.clone(),
            password: tb.tb_password.clone(),
            password_file: tb.tb_password_file.clone(),
            ca_cert: tb.tb_ca_cert.clone(),
            client_cert: tb.tb_client_cert.clone(),
            client_key: tb.tb_client_key.clone(),
            tls: tb.tb_tls,
            client_id: tb.client_id.clone(),
            qos: tb.qos,
            report_strategy: tb.report_strategy.clone(),
            connector_name: tb.connector_name.clone(),
            max_payload_size: tb.max_payload_size,
            keep_alive: Duration::from_secs(tb.keep_alive_seconds),
            metrics_address: tb.metrics_address,
            max_devices: tb.max_devices,
            min_pack_send_delay_ms: tb.min_pack_send_delay_ms,
            min_pack_size_to_send: tb.min_pack_size_to_send,
            queue_directory: self.queue.queue_directory.clone(),
            queue_max_bytes: self.queue.queue_max_bytes,
            queue_full_policy: self.queue.queue_full_policy,
            queue_fsync: self.queue.queue_fsync,
            remote_configuration: tb.remote_configuration,
            config_changed_at_ms: tb.config_changed_at_ms,
            statistics_period_seconds: tb.statistics_period_seconds,
        }
    }
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Use this `socket.json` instead of the built-in `examples/socket.json`; the simulated
    /// device then sends the built-in frames to it.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn parse_log_level(text: &str) -> Result<LogLevel, String> {
    LogLevel::parse(text).ok_or_else(|| format!("expected one of {}", LogLevel::NAMES.join(", ")))
}

fn parse_report_strategy(text: &str) -> Result<ReportStrategyConfig, String> {
    serde_json::from_str(text).map_err(|e| format!("not a report strategy object: {e}"))
}

/// Exit codes: 0 stopped cleanly, 1 runtime failure at start, 2 invalid configuration or usage,
/// 70 a core task panicked (the process must be restarted).
fn main() -> ExitCode {
    let cli = Cli::parse();
    let workers = cli.worker_threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        usize::from,
    );
    // One worker runs tokio's current-thread scheduler: the multi-thread one runs a task woken by
    // another at once (its LIFO slot), so the uplink would take the first frame of a wake-up
    // alone instead of all that wake-up read (docs/benchmarks.md#read-coalescing).
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_all();
    let coalescing_window = cli.read_coalescing_ms.map_or_else(
        || read_coalescing::default_window(workers),
        Duration::from_millis,
    );
    read_coalescing::install(&mut builder, coalescing_window);
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Validate(args) => validate(args),
        Command::Migrate(args) => migrate(args),
        Command::Run(args) => runtime.block_on(run(*args, cli.log_format, cli.log_level)),
        Command::Demo(args) => {
            logging::init(
                cli.log_level.unwrap_or(LogLevel::Warning),
                cli.log_format,
                false,
            );
            let options = demo::DemoOptions {
                duration: args.duration.map(Duration::from_secs),
                config: args.config,
            };
            match runtime.block_on(demo::run(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn validate(args: ValidateArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.config) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    let mut samples = Vec::new();
    for hex in &args.samples {
        match tools::parse_hex(hex) {
            Ok(bytes) => samples.push(bytes),
            Err(e) => {
                eprintln!("error: --sample {hex:?}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    samples.extend(args.sample_texts.iter().map(|t| t.as_bytes().to_vec()));
    let report = tools::validate(&text, &samples, args.peer);
    print!("{}", report.text);
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn migrate(args: MigrateArgs) -> ExitCode {
    let result = std::fs::read_to_string(&args.config)
        .map_err(|e| format!("cannot read {}: {e}", args.config.display()))
        .and_then(|text| tools::migrate(&text));
    let (converted, legacy) = match result {
        Ok(result) => result,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if !legacy {
        eprintln!("{} is already in the current format", args.config.display());
    }
    match args.output {
        Some(path) => {
            if let Err(e) = std::fs::write(&path, converted) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::from(1);
            }
        }
        None => print!("{converted}"),
    }
    ExitCode::SUCCESS
}

async fn run(args: RunArgs, log_format: LogFormat, log_level: Option<LogLevel>) -> ExitCode {
    let resolved = match gateway::resolve(args.overrides(), rand::random()) {
        Ok(resolved) => resolved,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let loaded = match load_file(&resolved.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!(
                "error: invalid configuration {}: {e}",
                resolved.config.display()
            );
            return ExitCode::from(2);
        }
    };
    let level = log_level
        .or(loaded.config.log_level)
        .unwrap_or(LogLevel::Info);
    logging::init(
        level,
        log_format,
        loaded.config.enable_remote_logging == Some(true),
    );
    for warning in &loaded.warnings {
        warn!(file = %resolved.config.display(), "{warning}");
    }
    if let Some(gateway_config) = &args.gateway_config {
        for warning in &resolved.warnings {
            warn!(file = %gateway_config.display(), "{warning}");
        }
    }
    let mut settings = resolved.settings;
    settings.log_level_override = log_level;
    let mut connector = match Connector::start(&loaded, settings).await {
        Ok(connector) => connector,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let (stop_reload, reload_stop) = tokio::sync::watch::channel(false);
    let watch = reload::watch(resolved.config.clone(), connector.reloader(), reload_stop);
    connector.supervise("reload", watch);
    tokio::select! {
        _ = shutdown_signal() => {}
        failure = connector.failed() => {
            error!("{failure}; exiting so that the connector is restarted");
            eprintln!("error: {failure}");
            return ExitCode::from(70);
        }
    }
    let _ = stop_reload.send(true);
    info!("stopping");
    connector
        .shutdown(Duration::from_secs(args.shutdown_grace_seconds))
        .await;
    info!("connector has been stopped");
    ExitCode::SUCCESS
}
