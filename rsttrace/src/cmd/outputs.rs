//! Where `rsttrace` writes: stdout and every `-w`/`--pcapng`/... file, each
//! an `Output` that may fail (full disk, closed pipe) without stopping the
//! others.

use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Result, anyhow};
use log::debug;

use crate::cli::{StdoutFormat, TraceArgs};
use crate::collect::counters::KernelDrops;
use crate::output::export::ExportDir;
use crate::output::rotate::RotatingSink;
use crate::output::{self, Format, Sink, TextOptions};
use crate::record::Classified;

/// An output that may fail (full disk, closed pipe) without stopping the others.
pub(super) struct Output {
    pub(super) name: String,
    pub(super) sink: Box<dyn Sink + Send>,
    pub(super) failed: Option<io::Error>,
    /// Events not written because this output had failed.
    pub(super) unwritten: u64,
}

impl Output {
    pub(super) fn write(&mut self, rec: &Classified) {
        if self.failed.is_some() {
            self.unwritten += 1;
            return;
        }
        if let Err(e) = self.sink.write(rec) {
            self.fail(e);
            self.unwritten += 1;
        }
    }

    pub(super) fn packet(&mut self, packet: &crate::output::pcapng::pairing::WirePacket) {
        if self.failed.is_none()
            && let Err(e) = self.sink.packet(packet)
        {
            self.fail(e);
        }
    }

    pub(super) fn gap(&mut self, lost: u64, at: std::time::SystemTime) {
        if self.failed.is_none()
            && let Err(e) = self.sink.write_gap(lost, at)
        {
            self.fail(e);
        }
    }

    pub(super) fn drops(&mut self, drops: &KernelDrops, at: std::time::SystemTime) {
        if self.failed.is_none()
            && let Err(e) = self.sink.write_drops(drops, at)
        {
            self.fail(e);
        }
    }

    pub(super) fn flush(&mut self) {
        if self.failed.is_none()
            && let Err(e) = self.sink.flush()
        {
            self.fail(e);
        }
    }

    pub(super) fn fail(&mut self, e: io::Error) {
        if e.kind() != io::ErrorKind::BrokenPipe {
            crate::output::status::warning(format!(
                "cannot write to {}: {e}; no more events go there, tracing continues",
                self.name
            ));
        }
        self.failed = Some(e);
    }
}

/// Opens the `--write` target: a file from an earlier run is moved aside
/// (FILE.1, ...), a new FILE is created exclusively, mode 0600.
pub(crate) fn open_export(path: &Path, keep: u32) -> Result<ExportDir> {
    let dir = ExportDir::open(path)?;
    dir.set_aside_previous(keep)?;
    Ok(dir)
}

pub(super) fn stdout_output(
    format: StdoutFormat,
    no_color: bool,
    lang: crate::model::explain::Lang,
    stacks: bool,
) -> Output {
    let stdout = io::stdout();
    let color = stdout.is_terminal() && !no_color && std::env::var_os("NO_COLOR").is_none();
    let format = match format {
        StdoutFormat::Text => Format::Text,
        StdoutFormat::Json => Format::Json,
        StdoutFormat::Csv => Format::Csv,
    };
    Output {
        name: "stdout".into(),
        sink: output::sink(
            format,
            Box::new(stdout),
            &TextOptions {
                color,
                lang,
                stacks,
            },
        ),
        failed: None,
        unwritten: 0,
    }
}

pub(super) fn build_outputs(args: &TraceArgs) -> Result<Vec<Output>> {
    let mut outputs = Vec::new();
    if let Some(path) = &args.write {
        let format = Format::from_path(path).ok_or_else(|| {
            anyhow!(
                "--write {}: unknown extension; use .jsonl or .json (JSON Lines), .csv, .pcapng (Wireshark), or .txt/.log (text)",
                path.display()
            )
        })?;
        let file_opts = TextOptions {
            color: false,
            lang: args.lang,
            stacks: args.stack,
        };
        let dir = open_export(path, args.rotate_count)?;
        let sink = match args.rotate_size {
            Some(max) => Box::new(RotatingSink::new(
                dir,
                format,
                file_opts,
                max,
                args.rotate_count,
            )?) as Box<dyn Sink + Send>,
            None => {
                let file = dir
                    .create()
                    .map_err(|e| anyhow!("cannot create --write file {}: {e}", path.display()))?;
                output::sink(format, Box::new(file), &file_opts)
            }
        };
        outputs.push(Output {
            name: path.display().to_string(),
            sink,
            failed: None,
            unwritten: 0,
        });
    }
    if args.quiet {
        return Ok(outputs);
    }
    // `rsttrace -w FILE >/dev/null`, as a daemon runs: formatting every
    // event for a device that discards it would cost as much as the export.
    if is_null_device(io::stdout().as_fd()) {
        debug!("stdout is /dev/null: events are not formatted for it");
    } else {
        outputs.push(stdout_output(
            args.format,
            args.no_color,
            args.lang,
            args.stack,
        ));
    }
    Ok(outputs)
}

/// Whether `fd` is the null device (character device 1:3), which
/// discards what is written to it.
fn is_null_device(fd: BorrowedFd<'_>) -> bool {
    let Ok(fd) = fd.try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_null_device_is_null() {
        let null = std::fs::File::options()
            .write(true)
            .open("/dev/null")
            .unwrap();
        assert!(is_null_device(null.as_fd()));
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("out")).unwrap();
        assert!(!is_null_device(file.as_fd()));
        // Another character device: /dev/zero is 1:5.
        let zero = std::fs::File::open("/dev/zero").unwrap();
        assert!(!is_null_device(zero.as_fd()));
        let (reader, _writer) = std::io::pipe().unwrap();
        assert!(!is_null_device(reader.as_fd()));
    }
}
