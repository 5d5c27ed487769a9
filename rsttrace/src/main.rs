use std::process::ExitCode;

use clap::Parser;
use rsttrace::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            rsttrace::errln!("rsttrace: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Trace(args)) => rsttrace::app::trace(args).await,
            Some(Command::Read(args)) => rsttrace::app::read(args),
            Some(Command::Completions { shell }) => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut cmd, "rsttrace", &mut script);
                print_all(&script)
            }
            Some(Command::Explain {
                cause,
                lang,
                markdown,
            }) => {
                let text = match (markdown, cause) {
                    (true, _) => rsttrace::explain::markdown(),
                    (false, Some(c)) => rsttrace::explain::render(c, lang),
                    (false, None) => rsttrace::cause::CauseId::ALL
                        .iter()
                        .map(|&c| rsttrace::explain::render(c, lang))
                        .collect::<Vec<_>>()
                        .join("\n"),
                };
                print_all(text.as_bytes())
            }
            Some(Command::Man) => {
                let mut page = Vec::new();
                clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                    .render(&mut page)?;
                print_all(&page)
            }
            Some(Command::Check(args)) => rsttrace::check::run(args.hooks),
            None => rsttrace::app::trace(cli.trace).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One readable message with its causes; no backtrace, no panic.
            rsttrace::errln!("rsttrace: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn print_all(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_timestamp(None)
        .init();
}
