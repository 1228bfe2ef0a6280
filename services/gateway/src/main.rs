//! `sovra`: the private RAG gateway. This binary owns the CLI and wires the
//! library crates together; request handling lives in `routes/` behind the
//! pipeline in `middleware.rs`.

mod answers;
mod cli;
mod denials;
mod export;
mod extract;
mod middleware;
mod problem;
mod quota;
mod routes;
mod server;
mod state;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "sovra", version, about = "Sovra: a private RAG gateway")]
struct Cli {
    /// Configuration file (default: config/sovra.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP gateway.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Mint a development token with the HS256 development secret.
    Token(cli::TokenArgs),
    /// Ingest files and folders through a running gateway.
    Ingest(cli::IngestArgs),
    /// Score lexical, dense and hybrid search on a judged query set (nDCG, recall, MRR).
    Eval(cli::EvalArgs),
    /// Print the OpenAPI document (generated from the handlers; docs/openapi.json).
    Openapi,
    /// Verify, export and prune the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Parse one document from stdin under hard limits (run by the gateway
    /// for every upload; not for people).
    #[command(hide = true)]
    ParseWorker(ParseWorkerArgs),
}

#[derive(clap::Args)]
struct ParseWorkerArgs {
    #[arg(long)]
    format: String,
    #[arg(long)]
    max_unpacked_bytes: u64,
    #[arg(long)]
    max_text_chars: usize,
    #[arg(long)]
    max_memory_bytes: u64,
    #[arg(long)]
    max_cpu_seconds: u64,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; exit 1 and name the first broken link if it is not whole.
    Verify,
    /// Write records (oldest first) to stdout or --output.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// RFC 3339 time; records at or after it.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 time; records before it.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Remove records older than --before (at least audit.retention_days old) behind a signed checkpoint.
    Prune {
        #[arg(long)]
        before: Option<String>,
    },
    /// Make a checkpoint signing key (mode 0600) and print its public key.
    Keygen {
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Jsonl,
    Csv,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The parse worker reads no configuration and starts no runtime: it
    // limits itself, parses stdin and answers on stdout.
    if let Command::ParseWorker(a) = &cli.command {
        let code = sovra_ingest::serve_worker(
            std::io::stdin().lock(),
            std::io::stdout().lock(),
            &a.format,
            sovra_ingest::Limits {
                max_unpacked_bytes: a.max_unpacked_bytes,
                max_text_chars: a.max_text_chars,
            },
            sovra_ingest::WorkerLimits {
                max_memory_bytes: a.max_memory_bytes,
                max_cpu_seconds: a.max_cpu_seconds,
                ..sovra_ingest::WorkerLimits::default()
            },
        );
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // Neither does printing the OpenAPI document.
    if let Command::Openapi = &cli.command {
        return match routes::openapi_json() {
            Ok(doc) => {
                print!("{doc}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sovra: the OpenAPI document could not be written: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Making a signing key needs no configuration either.
    if let Command::Audit {
        command: AuditCommand::Keygen { output },
    } = &cli.command
    {
        return cli::audit_keygen(output).unwrap_or_else(|e| {
            eprintln!("sovra: {e:#}");
            ExitCode::FAILURE
        });
    }
    let settings = match sovra_config::Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sovra: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sovra: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => server::serve(settings).await,
            Command::Migrate => cli::migrate(&settings).await,
            Command::Token(args) => cli::token(&settings, &args),
            Command::Ingest(args) => cli::ingest(&settings, args).await,
            Command::Eval(args) => cli::eval(&settings, args).await,
            Command::ParseWorker(_) | Command::Openapi => Ok(ExitCode::SUCCESS),
            Command::Audit { command } => match command {
                AuditCommand::Verify => cli::audit_verify(&settings).await,
                AuditCommand::Export {
                    format,
                    since,
                    until,
                    output,
                } => {
                    cli::audit_export(
                        &settings,
                        matches!(format, ExportFormat::Csv),
                        since,
                        until,
                        output,
                    )
                    .await
                }
                AuditCommand::Prune { before } => cli::audit_prune(&settings, before).await,
                AuditCommand::Keygen { output } => cli::audit_keygen(&output),
            },
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sovra: {e:#}");
            ExitCode::FAILURE
        }
    }
}
