//! The store kept across restarts (`[trace] data_dir`): every span placed in the store is also
//! appended to a log file in the data directory, in the store's own encoding, by a thread of
//! its own; on start the logs are read back into the store, whose caps then apply as usual.
//!
//! What survives what: the writer hands what it has to the operating system at least once a
//! second, so a killed process loses at most the last second; a clean stop
//! ([`super::TraceStore::close`]) writes everything and syncs the file. A record cut short by
//! a kill is where reading stops. Log files are `spans-NNNNNN.log`, a new one every
//! [`SEGMENT_BYTES`]; the oldest are deleted once the logs hold more than twice the store's
//! byte cap, by which time the store has evicted what they held.
//!
//! Record: the trace id (16 bytes, little-endian), then the span as `codec` encodes it (which
//! starts with its length).

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
/// Longest record read back: anything longer is a damaged file.
const MAX_RECORD: usize = 64 << 20;

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
        if let Some(n) = n {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every record of the logs in `dir`, oldest first, into `each(trace_id, span_bytes)`;
/// returns how many were read. A damaged or cut tail ends its file's records.
pub(super) fn replay(dir: &Path, mut each: impl FnMut(u128, &[u8])) -> io::Result<u64> {
    let mut n = 0;
    for (_, path) in segments(dir)? {
        let mut data = Vec::new();
        File::open(&path)?.read_to_end(&mut data)?;
        let mut rest = &data[..];
        while rest.len() >= 20 {
            let id = u128::from_le_bytes(rest[..16].try_into().unwrap_or([0; 16]));
            let len = u32::from_le_bytes(rest[16..20].try_into().unwrap_or([0; 4])) as usize;
            if len > MAX_RECORD || rest.len() < 20 + len {
                tracing::warn!(file = %path.display(), "trace log ends in a cut record; the rest of it is skipped");
                break;
            }
            each(id, &rest[16..20 + len]);
            rest = &rest[20 + len..];
            n += 1;
        }
    }
    Ok(n)
}

impl Journal {
    /// Starts writing to a new log file in `dir` (made if missing), after the ones there; a
    /// new file every `segment_bytes`, and the oldest deleted past `keep_bytes` in all.
    pub(super) fn open(dir: &Path, segment_bytes: u64, keep_bytes: u64) -> io::Result<Journal> {
        fs::create_dir_all(dir)?;
        let next = segments(dir)?.last().map_or(0, |(n, _)| n + 1);
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
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&dir, number))?;
        // The new file's name survives a power cut only once its directory is synced.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(Writer {
            dir,
            number,
            file: BufWriter::with_capacity(1 << 20, file),
            written: 0,
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
            self.file.write_all(&r.trace_id.to_le_bytes())?;
            self.file.write_all(&r.bytes)?;
            self.written += 16 + r.bytes.len() as u64;
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
mod tests {
    use super::*;

    fn ready(trace_id: u128, n: usize) -> Ready {
        // A stand-in record: a length-led body, as `codec` writes a span.
        let mut bytes = (n as u32).to_le_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(7u8, n));
        Ready {
            trace_id,
            start_us: 0,
            end_us: 0,
            owner: None,
            user: None,
            bytes,
        }
    }

    #[test]
    fn logs_rotate_drop_the_oldest_and_read_back_up_to_a_cut_record() {
        let dir = std::env::temp_dir().join(format!("mqrs-disk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut j = Journal::open(&dir, 1_000, 3_000).expect("open");
        for t in 0..40u128 {
            j.append(vec![ready(t, 180)]);
        }
        j.close();
        let logs = segments(&dir).expect("list");
        let total: u64 = logs
            .iter()
            .map(|(_, p)| fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        assert!(
            logs.len() > 1 && logs[0].0 > 0,
            "rotated, oldest gone: {logs:?}"
        );
        assert!(total <= 3_000 + 1_000, "{total} bytes kept");
        let mut seen = Vec::new();
        replay(&dir, |id, body| {
            assert_eq!(body.len(), 4 + 180);
            seen.push(id);
        })
        .expect("replay");
        assert_eq!(seen.last(), Some(&39), "the newest are kept");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
        // A kill mid-record: the cut record and what follows in that file are skipped.
        let last = &logs.last().expect("a log").1;
        let mut f = OpenOptions::new().append(true).open(last).expect("append");
        f.write_all(&40u128.to_le_bytes()).expect("write");
        f.write_all(&500u32.to_le_bytes()).expect("write");
        f.write_all(&[1, 2, 3]).expect("write");
        drop(f);
        let mut again = 0;
        replay(&dir, |_, _| again += 1).expect("replay");
        assert_eq!(again, seen.len());
        let _ = fs::remove_dir_all(&dir);
    }
}
