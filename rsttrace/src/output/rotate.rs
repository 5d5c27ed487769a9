//! `--rotate-size SIZE --rotate-count N`: tcpdump's -C/-W habit for exports.
//!
//! The current file keeps its name; when it passes SIZE it is renamed to
//! `NAME.1` (older ones shift to `.2`, ... and the one past N is deleted) and
//! a fresh file starts with its own header, so every file is valid alone.
//! Rotation happens between records, after a flush: no event is split or lost.
//! Renames and creates go through the directory's descriptor, and each new
//! file is created exclusively (`export::ExportDir`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::export::ExportDir;
use super::{Format, Sink, TextOptions, sink};
use crate::record::Classified;

pub struct RotatingSink {
    dir: ExportDir,
    format: Format,
    opts: TextOptions,
    max_bytes: u64,
    keep: u32,
    written: Arc<AtomicU64>,
    current: Box<dyn Sink + Send>,
}

impl RotatingSink {
    /// `dir` names a free FILE (`ExportDir::set_aside_previous` ran).
    pub fn new(
        dir: ExportDir,
        format: Format,
        opts: TextOptions,
        max_bytes: u64,
        keep: u32,
    ) -> anyhow::Result<RotatingSink> {
        let written = Arc::new(AtomicU64::new(0));
        let current = start(&dir, format, opts, &written)?;
        Ok(RotatingSink {
            dir,
            format,
            opts,
            max_bytes,
            keep: keep.max(1),
            written,
            current,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.current.flush()?;
        self.dir.shift(self.keep)?;
        self.current = start(&self.dir, self.format, self.opts, &self.written)?;
        Ok(())
    }
}

pub fn numbered(path: &Path, i: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

fn start(
    dir: &ExportDir,
    format: Format,
    opts: TextOptions,
    written: &Arc<AtomicU64>,
) -> io::Result<Box<dyn Sink + Send>> {
    written.store(0, Ordering::Relaxed);
    let file = dir.create()?;
    let counted = Counting {
        inner: file,
        written: written.clone(),
    };
    Ok(sink(format, Box::new(counted), &opts))
}

impl Sink for RotatingSink {
    fn write(&mut self, rec: &Classified) -> io::Result<()> {
        // Bytes reach the counter when the sink's buffer is flushed (once per
        // ring-buffer batch): a file may pass SIZE by at most one batch.
        self.current.write(rec)
    }

    fn write_gap(&mut self, lost: u64, at: std::time::SystemTime) -> io::Result<()> {
        self.current.write_gap(lost, at)
    }

    fn write_drops(
        &mut self,
        drops: &crate::collect::counters::KernelDrops,
        at: std::time::SystemTime,
    ) -> io::Result<()> {
        self.current.write_drops(drops, at)
    }

    fn packet(&mut self, packet: &crate::output::pcapng::pairing::WirePacket) -> io::Result<()> {
        self.current.packet(packet)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.current.flush()?;
        if self.written.load(Ordering::Relaxed) >= self.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }
}

/// Counts the bytes that reach the file.
struct Counting {
    inner: std::fs::File,
    written: Arc<AtomicU64>,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fixtures::record;

    fn open(path: &Path) -> ExportDir {
        ExportDir::open(path).unwrap()
    }

    #[test]
    fn rotates_keeps_n_files_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut sink =
            RotatingSink::new(open(&path), Format::Json, TextOptions::default(), 4096, 3).unwrap();
        let total = 200;
        for _ in 0..total {
            sink.write(&record()).unwrap();
            // The app flushes once per ring-buffer batch.
            sink.flush().unwrap();
        }
        sink.flush().unwrap();
        let files = [path.clone(), numbered(&path, 1), numbered(&path, 2)];
        assert!(
            !numbered(&path, 3).exists(),
            "more files than --rotate-count"
        );
        let mut kept = 0;
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            for line in text.lines() {
                serde_json::from_str::<serde_json::Value>(line).expect("whole records only");
                kept += 1;
            }
        }
        // 4 KiB files of ~900-byte records: the oldest fell off the end, and
        // every file holds whole records.
        assert!(kept > 0 && kept < total, "kept {kept}");
    }

    #[test]
    fn every_csv_file_has_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let mut sink =
            RotatingSink::new(open(&path), Format::Csv, TextOptions::default(), 1024, 2).unwrap();
        for _ in 0..20 {
            sink.write(&record()).unwrap();
            sink.flush().unwrap();
        }
        sink.flush().unwrap();
        for f in [path.clone(), numbered(&path, 1)] {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(text.starts_with("time,direction,cause"), "{}", f.display());
        }
    }
}
