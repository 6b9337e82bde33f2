//! `branchcache` command line: `run` (default), `check-config`, `inspect`, `store`, …

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use branchcache::app::App;
use branchcache::config::{Config, LogFormat};
use branchcache::store::Store;

#[derive(Parser)]
#[command(
    name = "branchcache",
    version,
    about = "BranchCache / PeerDist daemon for Linux branch offices"
)]
struct Cli {
    /// Configuration file (TOML). Without it the embedded defaults apply.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Log format override: text or json.
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default when no subcommand is given).
    Run,
    /// Validate a configuration file and exit (0 valid, 2 invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print a content information file (MS-PCCRC v1/v2): range, segments, hashes, secrets.
    /// Exit code 2 when the file cannot be read or is not valid content information.
    Inspect {
        /// The content information file (the body of a `Content-Encoding: peerdist` answer).
        file: PathBuf,
        /// Print JSON instead of the human-readable summary.
        #[arg(long)]
        json: bool,
    },
    /// Write a self-signed TLS certificate and key (PEM) for a lab hosted cache's PCHC v1
    /// HTTPS listener. Clients must be given the certificate as a trusted root.
    GenCert {
        /// Where to write the certificate.
        #[arg(long)]
        cert: PathBuf,
        /// Where to write the private key (created with mode 0600).
        #[arg(long)]
        key: PathBuf,
        /// Subject alternative names: host names or IP addresses (repeatable).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
    /// Offline block store maintenance on `[store] path` (stop the daemon first).
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
}

#[derive(Subcommand)]
enum StoreAction {
    /// Print size and counts as JSON.
    Stats,
    /// Re-hash every stored block with its protocol hash and evict bad ones.
    /// Exit code 0 all good, 1 bad blocks found (evicted), 2 store cannot be opened.
    Verify,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig { file } => match Config::from_file(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Inspect { file, json } => inspect(&file, json),
        Command::Store { action } => store_command(cli.config, action),
        Command::GenCert { cert, key, names } => match gen_cert(&cert, &key, &names) {
            Ok(()) => {
                println!("wrote {} and {}", cert.display(), key.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("branchcache gen-cert: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run => match run(cli.config, cli.log_format) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("branchcache: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn inspect(file: &std::path::Path, json: bool) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match branchcache::inspect::inspect(&bytes, json) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}

fn store_command(config_path: Option<PathBuf>, action: StoreAction) -> ExitCode {
    let config = match &config_path {
        Some(p) => Config::from_file(p),
        None => Ok(Config::embedded()),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("branchcache: starting the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let path = &config.store.path;
        let store = match Store::open(path, config.store.max_size).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("branchcache: cannot open store {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let code = match action {
            StoreAction::Stats => {
                let s = store.stats();
                let json = serde_json::json!({
                    "path": path,
                    "used_bytes": s.used_bytes,
                    "max_bytes": s.max_bytes,
                    "segments": s.segments,
                    "blocks": s.blocks,
                    "format_version": branchcache::store::FORMAT_VERSION,
                });
                println!("{json:#}");
                ExitCode::SUCCESS
            }
            StoreAction::Verify => {
                let bar = indicatif::ProgressBar::new(store.stats().blocks);
                let b = bar.clone();
                let report = store
                    .verify_all(move |p| {
                        b.set_length(p.blocks_total);
                        b.set_position(p.blocks_done);
                    })
                    .await;
                bar.finish_and_clear();
                println!(
                    "segments {} good {} bad {} unreadable {} bytes {}",
                    report.segments, report.good, report.bad, report.unreadable, report.bytes
                );
                if report.bad == 0 && report.unreadable == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
        };
        if let Err(e) = store.close().await {
            eprintln!("branchcache: closing the store: {e}");
            return ExitCode::from(2);
        }
        code
    })
}

fn run(config_path: Option<PathBuf>, log_format: Option<String>) -> anyhow::Result<()> {
    let config = match &config_path {
        Some(p) => Config::from_file(p)?,
        None => Config::embedded(),
    };
    let format = match log_format.as_deref() {
        Some("json") => LogFormat::Json,
        Some(_) => LogFormat::Text,
        None => config.log.format,
    };
    init_logging(&config.log.level, format);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let app = App::start(config).await?;
        let token = app.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested; draining");
            token.cancel();
        });
        app.wait().await;
        tracing::info!("stopped");
        Ok(())
    })
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BRANCHCACHE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `gen-cert`: refuse to overwrite; the key file is created 0600.
fn gen_cert(cert: &std::path::Path, key: &std::path::Path, names: &[String]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;

    let (cert_pem, key_pem) =
        branchcache::hosted_cache::tls::self_signed(names).context("generating certificate")?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    opts.open(key)
        .and_then(|mut f| f.write_all(key_pem.as_bytes()))
        .with_context(|| format!("writing {}", key.display()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(cert)
        .and_then(|mut f| f.write_all(cert_pem.as_bytes()))
        .with_context(|| format!("writing {}", cert.display()))?;
    Ok(())
}
