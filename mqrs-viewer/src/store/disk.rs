//! The store kept across restarts (`[trace] data_dir`): every span placed in the store is also
//! appended to a log file in the data directory, in the store's own encoding, by a thread of
//! its own; on start the logs are read back into the store, whose caps then apply as usual.
//!
//! What survives what: the writer hands what it has to the operating system at least once a
//! second, so a killed process loses at most the last second; a clean stop
//! ([`super::TraceStore::close`]) writes everything and syncs the file. Log files are
//! `spans-NNNNNN.log`, a new one every [`SEGMENT_BYTES`]; the oldest are deleted once the logs
//! hold more than twice the store's byte cap, by which time the store has evicted what they
//! held.
//!
//! A file starts with [`FILE_HEADER`]; a record is a mark ([`RECORD_MARK`]), a CRC-32 of the
//! rest, the length of the span's bytes, the trace id (16 bytes), then the span as `codec`
//! encodes it; integers little-endian. Reading is streaming, a record at a time. A record that
//! does not check out (a flipped byte, a cut write) is skipped, not the rest of its file:
//! reading resumes at the next mark whose record checks out, and the log says how many
//! stretches and bytes were skipped. Files written before the header existed (a record was
//! the trace id, then the span) are still read, up to their first damaged record.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::pending::Ready;

/// Size at which a log file is closed and the next one begun.
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;
/// Longest the writer keeps spans before handing them to the operating system (and the store
/// keeps spans waiting in its batches, with a data directory).
pub(super) const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Batches waiting for the writer at most; more are not logged (and counted): a disk slower
/// than the spans arriving must not take the process's memory.
const QUEUE: usize = 4096;
/// Longest span record read back: anything longer is damage (a span is far smaller, see
/// `limits`).
const MAX_RECORD: usize = 4 << 20;
/// Longest record of the earlier format read back: spans were not limited when it was
/// written, so its own bound holds.
const MAX_RECORD_V1: usize = 64 << 20;
/// The first bytes of a log file in this format.
pub(super) const FILE_HEADER: &[u8; 16] = b"mqrs-spans-log2\n";
/// The first bytes of every record.
pub(super) const RECORD_MARK: [u8; 4] = *b"\xf5SPN";
/// Bytes of a record before the span: mark, CRC, length, trace id.
const RECORD_HEAD: usize = 4 + 4 + 4 + 16;
/// Highest log number taken as one of ours; a file with a higher one is left alone, so the
/// next number can never wrap.
const MAX_SEGMENT: u64 = 999_999_999_999;

/// What the writer thread is sent.
enum Job {
    /// Spans to append.
    Spans(Vec<Ready>),
    /// Write everything, sync, answer, and stop.
    Close(mpsc::Sender<()>),
}

/// The writing side: a channel to the writer thread.
pub(super) struct Journal {
    tx: mpsc::SyncSender<Job>,
    thread: Option<JoinHandle<()>>,
    /// Spans not logged because the writer fell behind.
    unlogged: u64,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("spans-{n:06}.log"))
}

/// The log files in `dir`, oldest first, with their numbers.
fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let n = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("spans-")?.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        match n {
            Some(n) if n <= MAX_SEGMENT => out.push((n, path)),
            Some(_) => {
                tracing::warn!(file = %path.display(), "not a trace log of ours (its number is too high); left alone")
            }
            None => {}
        }
    }
    out.sort();
    Ok(out)
}

/// The CRC-32 a record carries: of its length, trace id and span bytes.
fn checksum(len: &[u8], trace_id: &[u8], span: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(trace_id);
    h.update(span);
    h.finalize()
}

/// What reading the logs back found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Replayed {
    /// Records read whole.
    pub(super) records: u64,
    /// Stretches of damage skipped (each may have held one record or several).
    pub(super) damaged: u64,
    /// Bytes in those stretches.
    pub(super) skipped_bytes: u64,
}

/// Reads every record of the logs in `dir`, oldest first, into `each(trace_id, span_bytes)`,
/// a file at a time and a record at a time (memory: one record and a read buffer).
pub(super) fn replay(dir: &Path, mut each: impl FnMut(u128, &[u8])) -> io::Result<Replayed> {
    let mut total = Replayed::default();
    for (_, path) in segments(dir)? {
        let mut file = Records::new(File::open(&path)?);
        let found = if file.starts_with(FILE_HEADER)? {
            file.skip(FILE_HEADER.len());
            file.read_v2(&mut each)?
        } else {
            file.read_v1(&mut each)?
        };
        if found.damaged > 0 {
            tracing::warn!(
                file = %path.display(),
                damaged = found.damaged,
                skipped_bytes = found.skipped_bytes,
                records_read = found.records,
                "trace log has damage; skipped it and read on"
            );
        }
        total.records += found.records;
        total.damaged += found.damaged;
        total.skipped_bytes += found.skipped_bytes;
    }
    Ok(total)
}

/// A log file read through a window: what is asked for is read in, what is passed is dropped.
struct Records<R> {
    src: R,
    buf: Vec<u8>,
    at: usize,
    eof: bool,
}

impl<R: Read> Records<R> {
    fn new(src: R) -> Self {
        Records {
            src,
            buf: Vec::new(),
            at: 0,
            eof: false,
        }
    }

    /// Makes at least `n` bytes available from the current place; false when the file ends
    /// before.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.buf.len() - self.at >= n {
            return Ok(true);
        }
        self.buf.drain(..self.at);
        self.at = 0;
        let mut chunk = [0u8; 64 << 10];
        while self.buf.len() < n && !self.eof {
            let got = self.src.read(&mut chunk)?;
            if got == 0 {
                self.eof = true;
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(self.buf.len() >= n)
    }

    fn here(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    fn skip(&mut self, n: usize) {
        self.at = (self.at + n).min(self.buf.len());
    }

    fn starts_with(&mut self, prefix: &[u8]) -> io::Result<bool> {
        Ok(self.fill(prefix.len())? && self.here().starts_with(prefix))
    }

    /// Records of this format; damage is stepped over to the next record that checks out.
    fn read_v2(&mut self, each: &mut impl FnMut(u128, &[u8])) -> io::Result<Replayed> {
        let mut out = Replayed::default();
        let mut damage: Option<u64> = None;
        while self.fill(1)? {
            match self.record_v2()? {
                Some(len) => {
                    if let Some(bytes) = damage.take() {
                        out.damaged += 1;
                        out.skipped_bytes += bytes;
                    }
                    let r = self.here();
                    let id = u128::from_le_bytes(r[12..28].try_into().unwrap_or([0; 16]));
                    each(id, &r[RECORD_HEAD..RECORD_HEAD + len]);
                    out.records += 1;
                    self.skip(RECORD_HEAD + len);
                }
                None => {
                    // Step to the next mark (at least one byte on).
                    *damage.get_or_insert(0) += 1;
                    self.skip(1);
                    while self.fill(RECORD_MARK.len())? && !self.here().starts_with(&RECORD_MARK) {
                        *damage.get_or_insert(0) += 1;
                        self.skip(1);
                    }
                    if !self.fill(RECORD_MARK.len())? {
                        *damage.get_or_insert(0) += self.here().len() as u64;
                        self.skip(self.here().len());
                    }
                }
            }
        }
        if let Some(bytes) = damage {
            out.damaged += 1;
            out.skipped_bytes += bytes;
        }
        Ok(out)
    }

    /// The span length of the record here when it checks out whole (mark, length, CRC).
    fn record_v2(&mut self) -> io::Result<Option<usize>> {
        if !self.fill(RECORD_HEAD)? || !self.here().starts_with(&RECORD_MARK) {
            return Ok(None);
        }
        let r = self.here();
        let crc = u32::from_le_bytes(r[4..8].try_into().unwrap_or([0; 4]));
        let len = u32::from_le_bytes(r[8..12].try_into().unwrap_or([0; 4])) as usize;
        if !(4..=MAX_RECORD).contains(&len) || !self.fill(RECORD_HEAD + len)? {
            return Ok(None);
        }
        let r = self.here();
        let ok = checksum(&r[8..12], &r[12..28], &r[RECORD_HEAD..RECORD_HEAD + len]) == crc;
        Ok(ok.then_some(len))
    }

    /// Records of the format before the header (no mark, no checksum): read up to the first
    /// that does not fit, and the rest of the file counted as skipped.
    fn read_v1(&mut self, each: &mut impl FnMut(u128, &[u8])) -> io::Result<Replayed> {
        let mut out = Replayed::default();
        while self.fill(20)? {
            let r = self.here();
            let id = u128::from_le_bytes(r[..16].try_into().unwrap_or([0; 16]));
            let len = u32::from_le_bytes(r[16..20].try_into().unwrap_or([0; 4])) as usize;
            if len > MAX_RECORD_V1 || !self.fill(20 + len)? {
                break;
            }
            each(id, &self.here()[16..20 + len]);
            out.records += 1;
            self.skip(20 + len);
        }
        let mut rest = self.here().len() as u64;
        let mut chunk = [0u8; 64 << 10];
        loop {
            match self.src.read(&mut chunk)? {
                0 => break,
                n => rest += n as u64,
            }
        }
        if rest > 0 {
            out.damaged += 1;
            out.skipped_bytes += rest;
        }
        Ok(out)
    }
}

impl Journal {
    /// Starts writing to a new log file in `dir` (made if missing), after the ones there; a
    /// new file every `segment_bytes`, and the oldest deleted past `keep_bytes` in all.
    pub(super) fn open(dir: &Path, segment_bytes: u64, keep_bytes: u64) -> io::Result<Journal> {
        fs::create_dir_all(dir)?;
        let next = segments(dir)?.last().map_or(0, |(n, _)| n + 1);
        if next > MAX_SEGMENT {
            return Err(io::Error::other(format!(
                "trace log numbers in {} have reached {MAX_SEGMENT}: move the logs away",
                dir.display()
            )));
        }
        let limits = Limits {
            segment_bytes,
            keep_bytes,
        };
        let writer = Writer::new(dir.to_path_buf(), next, limits)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("mqrs-trace-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(Journal {
            tx,
            thread: Some(thread),
            unlogged: 0,
        })
    }

    /// Appends `batch` (in the background); if the writer is that far behind, the batch is
    /// kept in memory only, counted and logged.
    pub(super) fn append(&mut self, batch: Vec<Ready>) {
        let n = batch.len() as u64;
        if let Err(mpsc::TrySendError::Full(_)) = self.tx.try_send(Job::Spans(batch)) {
            if self.unlogged == 0 {
                tracing::warn!("the trace log's disk is slower than the spans arriving; some are kept in memory only");
            }
            self.unlogged += n;
        }
    }

    /// True once [`Journal::close`] ran.
    pub(super) fn is_closed(&self) -> bool {
        self.thread.is_none()
    }

    /// Writes all that was appended, syncs, and stops the writer.
    pub(super) fn close(&mut self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Job::Close(done)).is_ok() {
            let _ = wait.recv();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sizes of the logs.
#[derive(Clone, Copy)]
struct Limits {
    segment_bytes: u64,
    keep_bytes: u64,
}

struct Writer {
    dir: PathBuf,
    number: u64,
    file: BufWriter<File>,
    written: u64,
    limits: Limits,
}

impl Writer {
    fn new(dir: PathBuf, number: u64, limits: Limits) -> io::Result<Writer> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&dir, number))?;
        if file.metadata()?.len() == 0 {
            file.write_all(FILE_HEADER)?;
        }
        // The new file's name survives a power cut only once its directory is synced.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(Writer {
            dir,
            number,
            file: BufWriter::with_capacity(1 << 20, file),
            written: FILE_HEADER.len() as u64,
            limits,
        })
    }

    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut last_flush = Instant::now();
        loop {
            let job = rx.recv_timeout(FLUSH_EVERY.saturating_sub(last_flush.elapsed()));
            match job {
                Ok(Job::Spans(batch)) => {
                    if let Err(e) = self.write(&batch) {
                        tracing::warn!(error = %e, dir = %self.dir.display(), "trace log write failed");
                        // A record may be half written: continue in a new file, so that a cut
                        // record is only ever a file's tail.
                        if let Err(e) = self.rotate() {
                            tracing::warn!(error = %e, "trace log not rotated");
                        }
                    }
                }
                Ok(Job::Close(done)) => {
                    let r = self
                        .file
                        .flush()
                        .and_then(|()| self.file.get_ref().sync_all());
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "trace log not synced");
                    }
                    let _ = done.send(());
                    return;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = self.file.flush();
                    return;
                }
            }
            if last_flush.elapsed() >= FLUSH_EVERY {
                let _ = self.file.flush();
                last_flush = Instant::now();
            }
        }
    }

    fn write(&mut self, batch: &[Ready]) -> io::Result<()> {
        for r in batch {
            let len = u32::try_from(r.bytes.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes();
            let id = r.trace_id.to_le_bytes();
            self.file.write_all(&RECORD_MARK)?;
            self.file
                .write_all(&checksum(&len, &id, &r.bytes).to_le_bytes())?;
            self.file.write_all(&len)?;
            self.file.write_all(&id)?;
            self.file.write_all(&r.bytes)?;
            self.written += (RECORD_HEAD + r.bytes.len()) as u64;
        }
        if self.written >= self.limits.segment_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// Closes this log file, begins the next, and deletes the oldest past `keep_bytes`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        *self = Writer::new(self.dir.clone(), self.number + 1, self.limits)?;
        let mut logs = segments(&self.dir)?;
        let mut total: u64 = logs
            .iter()
            .filter_map(|(_, p)| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        logs.retain(|(n, _)| *n != self.number);
        for (_, p) in logs {
            if total <= self.limits.keep_bytes {
                break;
            }
            total -= fs::metadata(&p).map_or(0, |m| m.len());
            fs::remove_file(&p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
