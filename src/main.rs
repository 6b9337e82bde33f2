//! `branchcache` command line: `run` (default), `check-config`, `hash`, `inspect`, `store`, …

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use branchcache::app::App;

/// mimalloc instead of glibc malloc: the proxy's hot paths allocate from
/// both runtime threads at once, and glibc's arena locks and `free`
/// consolidation showed up as ~10 % of a small hit's CPU (perf, 16 KiB hits).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
    /// Write the content information (MS-PCCRC) of a file, as a publisher would serve it.
    ///
    /// Exit status: 0 written, 2 bad invocation or input (missing file, empty key file, bad
    /// or out-of-file range, algorithm not allowed for the version, empty file), 1 IO failure.
    Hash(HashArgs),
    /// Show what a running daemon is doing: roles, listeners, store fill, hit ratio, bytes by
    /// source, WAN bytes saved (asks the admin listener's `/status`).
    /// Exit code 0, 1 when the daemon cannot be reached or its answer is not a status report.
    Status {
        /// Admin listener as HOST:PORT. Default: `[admin] listen` of `--config` (loopback when
        /// it listens on all addresses), else 127.0.0.1:9090.
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
        /// Print the JSON report instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// See it work: start an origin with a generated file, a publisher and a branch proxy on
    /// loopback (temporary stores, removed afterwards), download the file twice through the
    /// proxy and print what came from where (WAN vs cache bytes, times).
    /// Exit code 0, 1 when a step fails, 2 for an unreadable --size.
    Demo {
        /// Size of the generated file, e.g. "64 MiB" (at most 1 GiB; it is held in memory).
        #[arg(long, default_value = "32 MiB")]
        size: String,
    },
    /// Warm the cache: download objects through a running proxy and discard the bodies.
    /// Exit code 0 all downloaded, 1 some failed, 2 bad invocation (no target, unreadable list).
    Preload {
        /// Paths (`/files/x.iso`, for a proxy in reverse mode) or http:// URLs (for a proxy
        /// with `forward = true`).
        targets: Vec<String>,
        /// File with one target per line (blank lines and `#` comments skipped).
        #[arg(long, value_name = "FILE")]
        list: Option<PathBuf>,
        /// The proxy as HOST:PORT. Default: `[proxy] listen` of `--config` (loopback when it
        /// listens on all addresses), else 127.0.0.1:8080.
        #[arg(long, value_name = "ADDR")]
        proxy: Option<String>,
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
    /// Write every segment (metadata and verified blocks) to a cache package file, to seed
    /// another branch offline. The file holds segment secrets: it is created mode 0600.
    /// Exit code 0 written, 2 store cannot be opened or file cannot be written.
    Export {
        /// The package file to write (replaced atomically).
        file: PathBuf,
    },
    /// Load a cache package into the store. Every segment is re-validated against its id and
    /// every block re-hashed before it is stored; bad ones are skipped and counted.
    /// Exit code 0 all imported, 1 some segments or blocks rejected, 2 store cannot be opened
    /// or the file is not a readable package (what came before a damaged part stays imported).
    Import {
        /// The package file to read.
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct HashArgs {
    /// The file to describe.
    file: PathBuf,
    /// File holding the raw server secret key bytes (Ks is derived from them).
    #[arg(long, value_name = "KEYFILE")]
    key_file: PathBuf,
    /// Content information version: 1 (32 MiB segments of 64 KiB blocks) or 2
    /// (content-defined segments of at most 128 KiB, truncated SHA-512).
    #[arg(long, default_value = "1", value_parser = ["1", "2"])]
    content_version: String,
    /// Hash algorithm. v1: sha256 (default; the only one Windows peers serve), sha384,
    /// sha512. v2 always uses truncated SHA-512: only sha512 is accepted.
    #[arg(long, value_parser = ["sha256", "sha384", "sha512"])]
    hash: Option<String>,
    /// Describe only bytes START through END, END inclusive as in HTTP `Range: bytes=`
    /// (also `START-` to the end and `-SUFFIX` for the last SUFFIX bytes). The listed
    /// segments are whole; the range fields mark the requested bytes.
    #[arg(long, value_name = "START-END", allow_hyphen_values = true)]
    range: Option<String>,
    /// Output file (default: standard output, which must not be a terminal).
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Hashing threads (0 = all cores).
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
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
        Command::Hash(args) => hash(args),
        Command::Store { action } => store_command(cli.config, action),
        Command::Demo { size } => demo(&size),
        Command::Preload {
            targets,
            list,
            proxy,
        } => preload(cli.config, targets, list, proxy),
        Command::Status { admin, json } => match status(cli.config, admin, json) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("branchcache status: {e:#}");
                ExitCode::FAILURE
            }
        },
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

/// Files at least this large get a progress bar (when stderr is a terminal):
/// smaller ones hash in well under a second.
const PROGRESS_MIN_BYTES: u64 = 256 * 1024 * 1024;

fn hash(args: HashArgs) -> ExitCode {
    use std::io::{IsTerminal, Write};

    use branchcache::hashing::{hash_file, HashFileRequest};
    use branchcache::proto::pccrc::{HashAlgo, Version};

    let version = match args.content_version.as_str() {
        "2" => Version::V2,
        _ => Version::V1,
    };
    let algo = match (version, args.hash.as_deref()) {
        (Version::V2, None | Some("sha512")) => HashAlgo::Sha512Trunc,
        (_, Some("sha384")) => HashAlgo::Sha384,
        (_, Some("sha512")) => HashAlgo::Sha512,
        _ => HashAlgo::Sha256,
    };
    if args.output.is_none() && std::io::stdout().is_terminal() {
        eprintln!("branchcache hash: refusing to write binary content information to a terminal; use -o OUT or redirect");
        return ExitCode::from(2);
    }
    let len = std::fs::metadata(&args.file).map_or(0, |m| m.len());
    let bar = (std::io::stderr().is_terminal() && len >= PROGRESS_MIN_BYTES).then(|| {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let req = HashFileRequest {
        path: args.file,
        key_file: args.key_file,
        version,
        algo,
        range: args.range,
        threads: args.threads,
    };
    let result = hash_file(&req, |n| {
        if let Some(bar) = &bar {
            bar.set_position(n);
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let ci = match result {
        Ok(ci) => ci,
        Err(e) => {
            eprintln!("branchcache hash: {e}");
            return ExitCode::from(if e.is_usage() { 2 } else { 1 });
        }
    };
    let written = match &args.output {
        Some(out) => std::fs::write(out, &ci).with_context(|| format!("writing {}", out.display())),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&ci)
                .and_then(|()| stdout.flush())
                .context("writing to standard output")
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("branchcache hash: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A listen address as a local client reaches it (all-addresses → loopback).
fn reachable(mut listen: std::net::SocketAddr) -> std::net::SocketAddr {
    if listen.ip().is_unspecified() {
        listen.set_ip(match listen {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    listen
}

/// `preload`: download every target through the proxy, one after the other.
fn preload(
    config_path: Option<PathBuf>,
    mut targets: Vec<String>,
    list: Option<PathBuf>,
    proxy: Option<String>,
) -> ExitCode {
    use branchcache::preload::{parse_list, preload_one, request_uri};
    if let Some(list) = &list {
        match std::fs::read_to_string(list) {
            Ok(text) => targets.extend(parse_list(&text)),
            Err(e) => {
                eprintln!("branchcache preload: {}: {e}", list.display());
                return ExitCode::from(2);
            }
        }
    }
    if targets.is_empty() {
        eprintln!("branchcache preload: no target (give paths or URLs, or --list FILE)");
        return ExitCode::from(2);
    }
    for t in &targets {
        if let Err(e) = request_uri(t) {
            eprintln!("branchcache preload: {e}");
            return ExitCode::from(2);
        }
    }
    let proxy = match proxy {
        Some(p) => p,
        None => {
            let config = match &config_path {
                Some(p) => Config::from_file(p),
                None => Ok(Config::embedded()),
            };
            match config {
                Ok(c) => c.proxy.map_or_else(
                    || branchcache::config::DEFAULT_PROXY_LISTEN.to_string(),
                    |p| reachable(p.listen).to_string(),
                ),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("branchcache preload: starting the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut bar = PreloadBar::new(targets.len());
    let (mut ok, mut failed, mut total) = (0u32, 0u32, 0u64);
    for (i, target) in targets.iter().enumerate() {
        bar.next_object(i, target);
        match runtime.block_on(preload_one(&proxy, target, &mut bar)) {
            Ok(p) => {
                ok += 1;
                total += p.bytes;
                bar.println(format!(
                    "ok    {target}  {} in {:.2} s",
                    branchcache::status::human_bytes(p.bytes),
                    p.elapsed.as_secs_f64()
                ));
            }
            Err(e) => {
                failed += 1;
                bar.println(format!("FAIL  {e}"));
            }
        }
    }
    bar.finish();
    println!(
        "preloaded {ok} of {} objects ({}) through {proxy}",
        targets.len(),
        branchcache::status::human_bytes(total)
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `preload`'s progress: a percentage bar (bytes, rate, ETA) when the proxy
/// sends a `Content-Length`, a spinner with the byte count otherwise. The
/// message says which object of how many. Hidden when stderr is not a
/// terminal (indicatif's default), so logs and pipes stay clean.
struct PreloadBar {
    bar: indicatif::ProgressBar,
    objects: usize,
}

impl PreloadBar {
    fn new(objects: usize) -> Self {
        PreloadBar {
            bar: indicatif::ProgressBar::new_spinner(),
            objects,
        }
    }

    fn next_object(&mut self, i: usize, target: &str) {
        self.bar.reset();
        self.bar
            .set_message(format!("[{}/{}] {target}", i + 1, self.objects));
    }

    fn println(&self, line: String) {
        self.bar.suspend(|| println!("{line}"));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl branchcache::preload::Progress for PreloadBar {
    fn start(&mut self, length: Option<u64>) {
        let template = match length {
            Some(n) => {
                self.bar.set_length(n);
                "{msg} [{wide_bar}] {percent:>3}% {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
            }
            None => {
                self.bar.unset_length();
                "{spinner} {msg} {bytes} {binary_bytes_per_sec}"
            }
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            self.bar.set_style(style.progress_chars("=> "));
        }
    }

    fn advance(&mut self, n: u64) {
        self.bar.inc(n);
    }
}

/// `demo`: run it, print the report.
fn demo(size: &str) -> ExitCode {
    let size = match branchcache::config::parse_size(size) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("branchcache demo: --size: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging("warn", LogFormat::Text);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("branchcache demo: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("branchcache demo: origin, publisher and branch proxy on 127.0.0.1; downloading twice through the proxy…\n");
    match runtime.block_on(branchcache::demo::run(size, &std::env::temp_dir())) {
        Ok(report) => {
            print!("{}", report.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("branchcache demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How long `status` waits for the daemon's answer.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `status`: fetch `/status` from a running daemon; the table or the JSON.
fn status(
    config_path: Option<PathBuf>,
    admin: Option<String>,
    json: bool,
) -> anyhow::Result<String> {
    let addr = match admin {
        Some(a) => a,
        None => {
            let config = match &config_path {
                Some(p) => Config::from_file(p)?,
                None => Config::embedded(),
            };
            reachable(config.admin.listen).to_string()
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let body = runtime
        .block_on(async { tokio::time::timeout(STATUS_TIMEOUT, http_get(&addr, "/status")).await })
        .map_err(|_| anyhow::anyhow!("{addr}: no answer within {STATUS_TIMEOUT:?}"))??;
    let report: branchcache::status::StatusReport = serde_json::from_slice(&body)
        .with_context(|| format!("{addr}/status did not answer a status report"))?;
    Ok(if json {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    } else {
        branchcache::status::render_table(&report)
    })
}

/// One HTTP/1.1 GET; the body of a 200 answer.
async fn http_get(addr: &str, path: &str) -> anyhow::Result<bytes::Bytes> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to the admin listener at {addr} (is the daemon running? see --admin)"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .with_context(|| format!("{addr}: HTTP handshake"))?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .context("building the request")?;
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("{addr}{path}: request failed"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .with_context(|| format!("{addr}{path}: reading the answer"))?
        .to_bytes();
    anyhow::ensure!(status.is_success(), "{addr}{path} answered {status}");
    Ok(body)
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
            StoreAction::Export { file } => {
                let bar = indicatif::ProgressBar::new(store.stats().blocks);
                let b = bar.clone();
                let result =
                    branchcache::store::package::export(&store, &file, move |done, total| {
                        b.set_length(total);
                        b.set_position(done);
                    })
                    .await;
                bar.finish_and_clear();
                match result {
                    Ok(r) => {
                        println!(
                            "exported {} segments, {} blocks, {} bytes to {}",
                            r.segments,
                            r.blocks,
                            r.bytes,
                            file.display()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("branchcache store export: {e}");
                        ExitCode::from(2)
                    }
                }
            }
            StoreAction::Import { file } => {
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                let b = bar.clone();
                let result =
                    branchcache::store::package::import(&store, &file, move |done, total| {
                        b.set_length(total);
                        b.set_position(done);
                    })
                    .await;
                bar.finish_and_clear();
                match result {
                    Ok(r) => {
                        println!(
                            "imported {} segments ({} rejected), {} blocks ({} rejected), {} bytes",
                            r.segments, r.segments_rejected, r.blocks, r.blocks_rejected, r.bytes
                        );
                        if r.is_clean() {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::from(1)
                        }
                    }
                    Err(e) => {
                        eprintln!("branchcache store import: {e}");
                        ExitCode::from(2)
                    }
                }
            }
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
    let log_level = init_logging(&config.log.level, format);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let app = App::start(config).await?;
        let token = app.shutdown_token();
        let reloader = app.reloader();
        let metrics = app.metrics.clone();
        tokio::spawn(async move {
            handle_signals(config_path, reloader, metrics, log_level).await;
            tracing::info!("shutdown requested; draining");
            token.cancel();
        });
        app.wait().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Changes the log filter of the running subscriber; `None` when
/// `BRANCHCACHE_LOG` is set (the environment wins over the file, at start
/// and on reload).
type LogLevelSetter = Option<Box<SetLogLevel>>;

/// Replaces the running subscriber's filter with a new directive.
type SetLogLevel = dyn Fn(&str) -> Result<(), String> + Send + Sync;

fn init_logging(level: &str, format: LogFormat) -> LogLevelSetter {
    let from_env = tracing_subscriber::EnvFilter::try_from_env("BRANCHCACHE_LOG").ok();
    let pinned = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let setter: Box<SetLogLevel> = match format {
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |l: &str| {
                let f = tracing_subscriber::EnvFilter::try_new(l).map_err(|e| e.to_string())?;
                handle.reload(f).map_err(|e| e.to_string())
            })
        }
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |l: &str| {
                let f = tracing_subscriber::EnvFilter::try_new(l).map_err(|e| e.to_string())?;
                handle.reload(f).map_err(|e| e.to_string())
            })
        }
    };
    (!pinned).then_some(setter)
}

/// Wait for SIGTERM or Ctrl-C (then return: the caller drains). SIGHUP
/// (`systemctl reload`) re-reads the configuration file and applies what
/// can change without a restart; see [`reload_config`].
async fn handle_signals(
    config_path: Option<PathBuf>,
    reloader: branchcache::app::Reloader,
    metrics: std::sync::Arc<branchcache::metrics::Metrics>,
    log_level: LogLevelSetter,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("installing SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => {
                let result = reload_config(config_path.as_deref(), &reloader, log_level.as_deref()).await;
                metrics.config_reloads.get_or_create(&[("result", result)]).inc();
            }
        }
    }
}

/// One SIGHUP: re-read the file; if it does not validate, keep everything
/// as it runs. Returns the result label (`ok`, `restart_needed`, `error`).
async fn reload_config(
    path: Option<&std::path::Path>,
    reloader: &branchcache::app::Reloader,
    log_level: Option<&SetLogLevel>,
) -> &'static str {
    use branchcache::reload::Change;
    let Some(path) = path else {
        tracing::warn!("SIGHUP: started on the embedded defaults, there is no file to reload");
        return "error";
    };
    let new = match Config::from_file(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: configuration rejected; still running the previous one");
            return "error";
        }
    };
    let plan = reloader.reload(&new).await;
    for change in &plan.apply {
        if let Change::LogLevel(level) = change {
            match log_level {
                Some(set) => {
                    if let Err(e) = set(level) {
                        tracing::error!(error = %e, "SIGHUP: cannot change the log level");
                    }
                }
                None => tracing::warn!("SIGHUP: log.level ignored, BRANCHCACHE_LOG is set"),
            }
        }
        tracing::info!(key = change.key(), "SIGHUP: applied");
    }
    for what in &plan.restart_needed {
        tracing::warn!(
            section = what,
            "SIGHUP: changed, takes effect after a restart"
        );
    }
    if plan.is_empty() {
        tracing::info!(file = %path.display(), "SIGHUP: configuration unchanged");
    }
    if plan.restart_needed.is_empty() {
        "ok"
    } else {
        "restart_needed"
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
