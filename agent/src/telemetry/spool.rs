//! The telemetry spool: a directory of signed batch frames, one file per batch, named
//! `{sequence:020}-{samples}.eft`, written durably (temporary file, fsync, rename, directory
//! fsync) so a power cut or `kill -9` loses nothing that was spooled. Bounded in bytes: beyond
//! the bound the oldest batches are deleted and counted. A file is deleted only once the broker
//! acknowledged its batch. The last sequence number used is kept in `sequence`, so numbers keep
//! increasing after every batch was sent and deleted.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Spool I/O failures.
#[derive(Debug, thiserror::Error)]
#[error("telemetry spool {path}: {source}")]
pub struct SpoolError {
    path: PathBuf,
    source: std::io::Error,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError { path: path.to_owned(), source }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: u64,
    samples: u64,
}

/// The spool directory and its index.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    entries: BTreeMap<u64, Entry>,
    bytes: u64,
    last_sequence: u64,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, indexing the batches already there.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut entries = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A write cut short: never acknowledged, never numbered in a sent batch.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if let Some((seq, samples)) = parse_name(&name) {
                let bytes = entry.metadata().map_err(io_err(&entry.path()))?.len();
                entries.insert(seq, Entry { bytes, samples });
            }
        }
        let seq_file = dir.join("sequence");
        let stored = match std::fs::read_to_string(&seq_file) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&seq_file)(e)),
        };
        let last_sequence = stored.max(entries.keys().next_back().copied().unwrap_or(0));
        let bytes = entries.values().map(|e| e.bytes).sum();
        let spool = Spool { dir: dir.to_owned(), max_bytes, entries, bytes, last_sequence };
        spool.update_gauges();
        Ok(spool)
    }

    /// Numbers the next batch, persisting the number first so it is never reused.
    pub fn next_sequence(&mut self) -> Result<u64, SpoolError> {
        let seq = self.last_sequence + 1;
        write_durably(&self.dir, "sequence", seq.to_string().as_bytes())?;
        self.last_sequence = seq;
        Ok(seq)
    }

    /// Writes a numbered frame durably, then drops the oldest batches beyond the bound.
    pub fn append(&mut self, sequence: u64, frame: &[u8], samples: u64) -> Result<(), SpoolError> {
        write_durably(&self.dir, &file_name(sequence, samples), frame)?;
        self.entries.insert(sequence, Entry { bytes: frame.len() as u64, samples });
        self.bytes += frame.len() as u64;
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            let Some((&old, &entry)) = self.entries.iter().next() else { break };
            self.remove(old, entry)?;
            metrics::counter!(crate::metric::TELEMETRY_DROPPED_BATCHES).increment(1);
            metrics::counter!(crate::metric::TELEMETRY_DROPPED_SAMPLES).increment(entry.samples);
            tracing::warn!(sequence = old, samples = entry.samples, "Telemetry spool full; dropped the oldest batch.");
        }
        self.update_gauges();
        Ok(())
    }

    /// Deletes an acknowledged batch (a no-op when it is already gone).
    pub fn ack(&mut self, sequence: u64) -> Result<(), SpoolError> {
        if let Some(entry) = self.entries.get(&sequence).copied() {
            self.remove(sequence, entry)?;
            self.update_gauges();
        }
        Ok(())
    }

    /// Spooled sequence numbers, oldest first.
    pub fn sequences(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.keys().copied()
    }

    /// Reads a spooled frame.
    pub fn read(&self, sequence: u64) -> Result<Option<Vec<u8>>, SpoolError> {
        let Some(entry) = self.entries.get(&sequence) else { return Ok(None) };
        let path = self.dir.join(file_name(sequence, entry.samples));
        std::fs::read(&path).map(Some).map_err(io_err(&path))
    }

    /// Batches and bytes spooled.
    pub fn usage(&self) -> (usize, u64) {
        (self.entries.len(), self.bytes)
    }

    fn remove(&mut self, sequence: u64, entry: Entry) -> Result<(), SpoolError> {
        let path = self.dir.join(file_name(sequence, entry.samples));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        self.entries.remove(&sequence);
        self.bytes -= entry.bytes;
        Ok(())
    }

    fn update_gauges(&self) {
        metrics::gauge!(crate::metric::TELEMETRY_SPOOL_BATCHES).set(self.entries.len() as f64);
        metrics::gauge!(crate::metric::TELEMETRY_SPOOL_BYTES).set(self.bytes as f64);
    }
}

fn file_name(sequence: u64, samples: u64) -> String {
    format!("{sequence:020}-{samples}.eft")
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let (seq, samples) = name.strip_suffix(".eft")?.split_once('-')?;
    Some((seq.parse().ok()?, samples.parse().ok()?))
}

/// Temporary file, fsync, rename, directory fsync.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SpoolError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_err(&tmp))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_keeps_numbering_after_acks() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
        for _ in 0..3 {
            let seq = spool.next_sequence().expect("seq");
            spool.append(seq, b"frame", 2).expect("append");
        }
        spool.ack(1).expect("ack");
        drop(spool);
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(spool.sequences().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(spool.read(2).expect("read").as_deref(), Some(&b"frame"[..]));
        spool.ack(2).expect("ack");
        spool.ack(3).expect("ack");
        drop(spool);
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(spool.usage(), (0, 0));
        assert_eq!(spool.next_sequence().expect("seq"), 4, "numbers are never reused");
    }

    #[test]
    fn drops_the_oldest_beyond_the_bound() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut spool = Spool::open(dir.path(), 25).expect("open");
        for _ in 0..5 {
            let seq = spool.next_sequence().expect("seq");
            spool.append(seq, &[0u8; 10], 1).expect("append");
        }
        assert_eq!(spool.sequences().collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(spool.usage(), (2, 20));
    }
}
