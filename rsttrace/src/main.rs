use std::process::ExitCode;

use clap::Parser;
use rsttrace::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    rsttrace::output::status::init(cli.log_format);
    init_logging(cli.verbose);
    rsttrace::kernel::btf_source::use_file(cli.btf.clone());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            rsttrace::output::status::error(&anyhow::Error::new(e).context("cannot start"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Trace(args)) => rsttrace::cmd::trace::trace(*args).await,
            Some(Command::Read(args)) => rsttrace::cmd::read::read(*args),
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
                    (true, _) => rsttrace::model::explain::markdown(),
                    (false, Some(c)) => rsttrace::model::explain::render(c, lang),
                    (false, None) => rsttrace::model::cause::CauseId::ALL
                        .iter()
                        .map(|&c| rsttrace::model::explain::render(c, lang))
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
            Some(Command::Check(args)) => {
                rsttrace::cmd::check::run(args.hooks, args.verify, args.transport)
            }
            None => rsttrace::cmd::trace::trace(cli.trace).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One readable message with its causes; no backtrace, no panic.
            rsttrace::output::status::error(&e);
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
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    logger.format_timestamp(None);
    if rsttrace::output::status::format() == rsttrace::output::status::LogFormat::Json {
        logger.format(|out, record| {
            use std::io::Write;
            writeln!(out, "{}", rsttrace::output::status::log_json(record))
        });
    }
    logger.init();
}
