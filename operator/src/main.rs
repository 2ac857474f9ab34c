//! `socket-connector-operator`: `run` reconciles SocketConnectors; `crd` prints the CRD.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kube::Client;
use socket_connector_operator::build::{Defaults, FIELD_MANAGER};
use socket_connector_operator::controller::{self, Context};
use socket_connector_operator::metrics::OperatorMetrics;
use socket_connector_operator::{crd, leader};
use tracing::{error, info};

#[derive(Debug, Parser)]
#[command(name = "socket-connector-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reconcile SocketConnector resources.
    Run(RunArgs),
    /// Print the SocketConnector CRD as YAML.
    Crd,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Watch only these namespaces, comma-separated (default: all namespaces).
    #[arg(long = "namespace", env = "WATCH_NAMESPACE", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: SocketAddr,
    /// Connector image for resources that do not set spec.image.
    #[arg(long, env = "CONNECTOR_IMAGE")]
    connector_image: Option<String>,
    /// Take a Lease before reconciling, so that several operator replicas are safe.
    #[arg(long, env = "LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the Lease (default: the pod's namespace, POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease (default: POD_NAME or the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Ask each running connector pod for its ThingsBoard link (`/status`) this often; the
    /// ThingsBoardConnected condition follows within it.
    #[arg(long, env = "POD_STATUS_INTERVAL_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pod_status_interval_seconds: u64,
    /// Watch the metadata of the Secrets connector pods mount, to act on a new or rotated Secret
    /// within seconds (needs list and watch on Secrets, patch and delete on pods).
    #[arg(long, env = "WATCH_SECRETS")]
    watch_secrets: bool,
    /// Log format: human or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "human")]
    log_format: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            std::env::var("RUST_LOG")
                .unwrap_or_else(|_| "warn,socket_connector_operator=info".to_owned()),
        );
    let _ = if args.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    let client = Client::try_default().await?;
    let metrics = Arc::new(OperatorMetrics::new());
    let listener = probes::bind(args.metrics_address).await?;
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(probes::serve(listener, metrics.clone(), stop_rx));

    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("{FIELD_MANAGER}-{}", std::process::id()));
    let mut defaults = Defaults::default();
    if let Some(image) = args.connector_image {
        defaults.image = image;
    }
    let mut context = Context::new(client.clone(), defaults, metrics.clone(), identity.clone())
        .with_pod_status_interval(std::time::Duration::from_secs(
            args.pod_status_interval_seconds,
        ));
    if args.watch_secrets {
        context = context.with_secret_watch();
    }
    let context = Arc::new(context);

    if !args.leader_election {
        metrics.started.store(true, Ordering::Relaxed);
        controller::run_all(context, args.namespaces).await;
        return Ok(());
    }
    let mut leadership = leader::join(client, &args.lease_namespace, &identity, 15, 5).await?;
    metrics.started.store(true, Ordering::Relaxed);
    info!(%identity, "waiting for the leader lease");
    leadership.acquired().await;
    info!(%identity, "leading");
    tokio::select! {
        _ = controller::run_all(context, args.namespaces) => {}
        _ = leadership.lost() => {
            anyhow::bail!("lost the leader lease; exiting so that another replica leads");
        }
    }
    leadership.release().await;
    Ok(())
}
