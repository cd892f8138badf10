//! The `s3dock` command: parses arguments, resolves settings once, runs library
//! operations and renders their results. stdout carries data only (archives,
//! `--json`); everything else goes to stderr.

mod cli;
mod commands;
mod deploy;
mod errors;
mod lifecycle;
mod profiles;
mod render;
mod settings;

use clap::FromArgMatches;
use cli::{Cli, Command, StoreArgs, TransferArgs};
use settings::{ArgSources, Settings};
use std::io::IsTerminal;

fn main() -> std::process::ExitCode {
    let matches = cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sources = ArgSources::from_matches(&matches);
    // The AWS SDK's own warnings (IMDS probes, retries) only with -v: the error line
    // says what went wrong. Colour only on a terminal.
    let verbose = cli.global.verbose;
    let filter = match (cli.global.quiet, verbose) {
        (true, _) => "error,aws=off",
        (_, 0) => "warn,aws=off",
        (_, 1) => "info,aws=warn",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("S3DOCK_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_target(false)
        .without_time()
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The agent handles SIGTERM itself: it finishes a deploy in progress and exits 0.
    let own_signals = matches!(cli.command, Command::Agent(_));
    let code = rt.block_on(async {
        tokio::select! {
            r = run(cli, matches, sources) => match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("s3dock: error: {}", errors::line(&e));
                    if let Some(d) = errors::detail(&e).filter(|_| verbose > 0) {
                        eprintln!("s3dock: detail: {d}");
                    }
                    lifecycle::exit_code(&e)
                }
            },
            (name, code) = interrupted(), if !own_signals => {
                // The work future is dropped here; then clean up what it had in flight.
                let n = s3dock::registry::inflight::abort_all().await;
                eprintln!("s3dock: error: interrupted by {name}: aborted {n} upload(s) in flight; no tag was changed by the unfinished work");
                code
            }
        }
    });
    // Blocking threads (archive readers) may be parked on a pipe; don't wait for them.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::ExitCode::from(code)
}

/// Resolves on SIGINT or SIGTERM with the signal's name and the shell's exit code for it.
async fn interrupted() -> (&'static str, u8) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = int.recv() => ("SIGINT", 130),
        _ = term.recv() => ("SIGTERM", 143),
    }
}

async fn run(cli: Cli, matches: clap::ArgMatches, sources: ArgSources) -> anyhow::Result<()> {
    let (cmd_compression, cmd_builder) = match &cli.command {
        Command::Push(a) => (a.compression, None),
        Command::Build(a) => (a.compression, a.builder),
        _ => (None, None),
    };
    match cli.command {
        Command::Config { command } => settings::run(command, &cli.global, &sources),
        Command::Completions { shell } => {
            cli::completions(shell);
            Ok(())
        }
        Command::Man { dir } => cli::man(dir.as_deref()),
        command => {
            // A command without store flags still reads the hidden top-level ones
            // (and their environment variables), e.g. for `stamp`.
            let (st, tr) = match command.shared() {
                (Some(st), tr) => (st.clone(), tr.cloned()),
                (None, _) => (StoreArgs::from_arg_matches(&matches)?, None),
            };
            let tr = match tr {
                Some(tr) => tr,
                None => TransferArgs::from_arg_matches(&matches)?,
            };
            let s = Settings::resolve(
                &cli.global,
                &st,
                &tr,
                &sources,
                cmd_compression,
                cmd_builder,
            )?;
            commands::run(&s, command).await
        }
    }
}
