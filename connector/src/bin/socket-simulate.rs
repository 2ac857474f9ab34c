//! `socket-simulate`: load generator for the socket connector. Opens N TCP connections (or UDP
//! sockets), sends 23-byte frames (`SSSSSSSS,UUUUUUUUUUU,C\n`: sequence number, send time in µs
//! modulo 10^11, connection digit) at a total rate, and prints a JSON summary on stdout.
//!
//! `socket-simulate --print-config` prints the matching `socket.json`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use socket_connector::simulate::{self, LoadOptions, Progress};

/// Simulated devices for load tests: fixed-width newline-terminated frames to a TCP or UDP
/// socket connector at a given rate, bounded by --duration and/or --count.
#[derive(Debug, Parser)]
#[command(name = "socket-simulate", version)]
struct Cli {
    #[command(flatten)]
    load: LoadOptions,
    /// Runtime worker threads of the generator (1: a single thread).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the matching `socket.json` (for the --target port and --protocol) and exit.
    #[arg(long)]
    print_config: bool,
    /// `bufferSize` written by --print-config.
    #[arg(long, default_value_t = 1024)]
    buffer_size: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_config {
        let config =
            simulate::socket_json(cli.load.protocol, cli.load.target.port(), cli.buffer_size);
        println!(
            "{}",
            serde_json::to_string_pretty(&config).expect("JSON of a JSON value")
        );
        return ExitCode::SUCCESS;
    }
    match simulate::run_blocking(&cli.load, Arc::new(Progress::default()), cli.threads) {
        Ok(summary) => {
            println!(
                "{}",
                serde_json::to_string(&summary).expect("JSON of the summary")
            );
            if summary.errors > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
