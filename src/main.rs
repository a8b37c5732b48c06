//! The `mailfront` binary: parse the command line, start tracing, load the config and call
//! into the library. Signals: SIGTERM and SIGINT drain open connections for
//! `drain_timeout`; a second one cuts them at once.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use mailfront::{certs, inspect, tls, Config, Server};

#[derive(Parser)]
#[command(version, about = "TLS-terminating front proxy for mail hosts")]
struct Cli {
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the config and the whole certificate store without binding; exit 0 only
    /// if the proxy would start.
    CheckConfig {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show every entry of the store: names, issuer, key, expiry, state, and which entry
    /// serves each name.
    Certs {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// Whether each customer domain's DNS points at this host (MX; A/AAAA/CNAME of its
    /// mail host names; SPF and MTA-STS records) and the store covers those names: state
    /// resolved, invalid (with every reason and its fix) or unknown (the DNS server did not
    /// answer). Exit 0 when all are resolved, 1 otherwise.
    Domains {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
        /// The DNS server to ask (IP or IP:PORT) instead of the system's.
        #[arg(long)]
        resolver: Option<String>,
        /// The domains (default: every domain the store and routes know).
        domains: Vec<String>,
    },
    /// Run the store's loader and certificate checks on files: the certificate, its chain
    /// and its key in any order and form (PEM, DER, PKCS#7), or one file holding them.
    /// Exit 0 without errors, 1 with errors, 2 on usage problems.
    Check {
        /// The domain the certificate must cover.
        #[arg(long)]
        domain: Option<String>,
        /// Roots to build the chain to (default: the system bundle).
        #[arg(long)]
        ca_bundle: Option<PathBuf>,
        /// Intermediates that may complete a short chain.
        #[arg(long)]
        issuers_dir: Option<PathBuf>,
        /// CRLs (DER or PEM) to check revocation against.
        #[arg(long)]
        crl_dir: Option<PathBuf>,
        /// The key is not there yet: check the certificate alone.
        #[arg(long)]
        no_key: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

impl From<OutputFormat> for inspect::Format {
    fn from(f: OutputFormat) -> Self {
        match f {
            OutputFormat::Text => Self::Text,
            OutputFormat::Json => Self::Json,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Certs { config, format } => certs_view(&config, format.into()),
        Command::Domains {
            config,
            format,
            resolver,
            domains,
        } => domains_view(&config, &domains, resolver.as_deref(), format.into()),
        Command::Check {
            domain,
            ca_bundle,
            issuers_dir,
            crl_dir,
            no_key,
            format,
            files,
        } => {
            let req = inspect::check::Request {
                domain,
                ca_bundle,
                issuers_dir,
                crl_dir,
                no_key,
                files,
            };
            return match inspect::check::run(&req, format.into(), &mut std::io::stdout()) {
                Ok(false) => ExitCode::SUCCESS,
                Ok(true) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("mailfront check: {e}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailfront: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    // notify logs its inotify bookkeeping at info and warn (watches already gone with a
    // vanished store directory); mailfront logs what matters of it in its own words.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,notify=error"));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    // One thread runs everything on its own scheduler: none of the hand-offs and wake-ups
    // between worker threads a multi-thread runtime makes even with a single worker.
    let mut builder = match config.server.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = threads {
                builder.worker_threads(threads);
            }
            builder
        }
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(&config)?;
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let (tx, mut second) = tokio::sync::mpsc::channel::<()>(1);
        let first = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
            }
            // The second signal, during the drain, cuts it short.
            tokio::spawn(async move {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                let _ = tx.send(()).await;
            });
        };
        let cut_now = async move {
            second.recv().await;
            tracing::warn!("second signal: closing open connections now");
        };
        server.run(first, cut_now).await;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

fn certs_view(path: &std::path::Path, format: inspect::Format) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let view = inspect::certs::view(&config)?;
    // A closed stdout (`| head`) ends the listing, not in an error.
    let _ = inspect::certs::print(&view, format, &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

fn domains_view(
    path: &std::path::Path,
    domains: &[String],
    resolver: Option<&str>,
    format: inspect::Format,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let resolver = resolver
        .map(mailfront::config::parse_resolver)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--resolver: {e}"))?
        .or(config.onboarding.as_ref().and_then(|o| o.resolver));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let reports = runtime.block_on(inspect::domains::check(&config, domains, resolver))?;
    let _ = inspect::domains::print(&reports, format, &mut std::io::stdout());
    let all_resolved = reports
        .iter()
        .all(|r| r.state == mailfront::onboarding::readiness::Readiness::Resolved);
    Ok(if all_resolved {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn check_config(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    // `run` refuses to start without usable ticket keys, so the check does too.
    let keys = config
        .server
        .ticket_keys
        .as_deref()
        .map(mailfront::tickets::read)
        .transpose()?;
    // So does it without a usable admin token.
    let token = config.admin.as_ref().and_then(|a| a.token_file.as_deref());
    token.map(mailfront::admin::check_token).transpose()?;
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) ends the listing, not the check: the exit status judges.
    let _ = inspect::config::print_config(path, &config, &mut out);
    if let (Some(path), Some(keys)) = (&config.server.ticket_keys, keys) {
        let _ = writeln!(
            out,
            "  ticket keys {}: ok, encrypting with key {}",
            path.display(),
            keys.encrypting_name()
        );
    }
    // The store's own report: what `run` would load, by the same catalog.
    let report = certs::inspect(&config.certs, &config.server.name, &tls::provider())?;
    let _ = inspect::config::print_store(&config, &report, &mut out);
    Ok(ExitCode::SUCCESS)
}
