//! `rsttrace read FILE`: an export replayed through the same outputs and
//! filters as a live trace.

use std::fs::File;
use std::io;

use anyhow::{Context, Result, anyhow};
use log::warn;

use crate::cli::ReadArgs;
use crate::cmd::outputs::stdout_output;
use crate::output::stats::Stats;

/// `rsttrace read FILE`: replays an export through the same outputs and filters.
pub fn read(args: ReadArgs) -> Result<()> {
    use crate::output::json::read::{Line, MAX_LINE, NextLine, next_line, parse_line};

    let mut input: Box<dyn io::BufRead> = if args.file.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.file)
            .map_err(|e| anyhow!("cannot read {}: {e}", args.file.display()))?;
        Box::new(io::BufReader::new(file))
    };
    let filter = args.filters.to_filter(&args.ports, &args.pids);
    let mut out = stdout_output(args.format, args.no_color, args.lang, false);
    let mut stats = Stats::default();
    let mut buf = Vec::new();
    for n in 0.. {
        let line = match next_line(&mut input, &mut buf)
            .with_context(|| format!("reading {}", args.file.display()))?
        {
            NextLine::Line(line) => line,
            NextLine::End => break,
            NextLine::TooLong => {
                stats.decode_errors += 1;
                warn!(
                    "{}:{}: line longer than {} bytes, skipped",
                    args.file.display(),
                    n + 1,
                    MAX_LINE
                );
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(Line::Event(rec)) if filter.matches(&rec) => {
                out.write(&rec);
                stats.add(&rec);
            }
            Ok(Line::Event(_)) => stats.filtered_userspace += 1,
            Ok(Line::Gap(lost, drops, at)) => {
                if lost > 0 || !drops.any() {
                    out.gap(lost, at);
                }
                if drops.any() {
                    out.drops(&drops, at);
                }
                stats.lost += lost;
            }
            Err(e) => {
                stats.decode_errors += 1;
                warn!("{}:{}: {e:#}", args.file.display(), n + 1);
            }
        }
    }
    out.flush();
    crate::output::status::summary(&stats, args.lang);
    Ok(())
}
