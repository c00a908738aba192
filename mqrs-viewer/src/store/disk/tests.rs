//! Tests of the logs: rotation, reading back, damage skipped record by record, the older
//! format, and log numbers that cannot wrap.

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

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mqrs-disk-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

/// The trace ids read back from `dir`, and what the reading found.
fn read_back(dir: &Path) -> (Vec<u128>, Replayed) {
    let mut seen = Vec::new();
    let r = replay(dir, |id, body| {
        assert_eq!(
            body.len(),
            4 + u32::from_le_bytes(body[..4].try_into().expect("len")) as usize
        );
        seen.push(id);
    })
    .expect("replay");
    (seen, r)
}

#[test]
fn logs_rotate_drop_the_oldest_and_read_back_past_a_cut_record() {
    let dir = dir("rotate");
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
    let (seen, r) = read_back(&dir);
    assert_eq!(seen.last(), Some(&39), "the newest are kept");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    assert_eq!(r.damaged, 0);
    // A kill mid-record: the cut record is skipped and counted.
    let last = &logs.last().expect("a log").1;
    let mut f = OpenOptions::new().append(true).open(last).expect("append");
    f.write_all(&RECORD_MARK).expect("write");
    f.write_all(&[1, 2, 3]).expect("write");
    drop(f);
    let (again, r) = read_back(&dir);
    assert_eq!(again, seen);
    assert_eq!((r.damaged, r.skipped_bytes), (1, 7));
    let _ = fs::remove_dir_all(&dir);
}

/// One log of `n` records of traces 0.., as bytes.
fn one_log(name: &str, n: u128) -> (PathBuf, Vec<u8>) {
    let dir = dir(name);
    let mut j = Journal::open(&dir, u64::MAX, u64::MAX).expect("open");
    for t in 0..n {
        j.append(vec![ready(t, 50)]);
    }
    j.close();
    let path = segments(&dir).expect("list")[0].1.clone();
    let bytes = fs::read(&path).expect("read");
    (dir, bytes)
}

#[test]
fn a_flipped_length_byte_loses_one_record_not_the_rest_of_the_file() {
    let (dir, mut bytes) = one_log("length", 100);
    let record = RECORD_HEAD + 4 + 50;
    // The span length of record 10: its high byte, so it claims megabytes.
    let at = FILE_HEADER.len() + 10 * record + 11;
    bytes[at] ^= 0x40;
    fs::write(segments(&dir).expect("list")[0].1.clone(), &bytes).expect("write");
    let (seen, r) = read_back(&dir);
    assert_eq!(seen.len(), 99, "{r:?}");
    assert!(!seen.contains(&10));
    assert_eq!((r.records, r.damaged), (99, 1));
    assert_eq!(r.skipped_bytes, record as u64);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn random_damage_never_makes_a_phantom_record() {
    let (dir, clean) = one_log("phantom", 200);
    let path = segments(&dir).expect("list")[0].1.clone();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _round in 0..50 {
        let mut bytes = clean.clone();
        for _ in 0..20 {
            let i = FILE_HEADER.len() + (next() as usize) % (bytes.len() - FILE_HEADER.len());
            bytes[i] ^= 1 << (next() % 8);
        }
        fs::write(&path, &bytes).expect("write");
        let mut ids = Vec::new();
        let r = replay(&dir, |id, body| {
            // Every record read is one that was written, whole.
            assert_eq!(body, &ready(id, 50).bytes[..]);
            ids.push(id);
        })
        .expect("replay");
        assert!(ids.iter().all(|id| *id < 200));
        assert!(ids.len() >= 200 - 20 && r.damaged >= 1, "{r:?}");
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn logs_of_the_older_format_are_still_read() {
    let dir = dir("v1");
    fs::create_dir_all(&dir).expect("mkdir");
    let mut old = Vec::new();
    for t in 0..5u128 {
        old.extend_from_slice(&t.to_le_bytes());
        old.extend_from_slice(&ready(t, 30).bytes);
    }
    old.extend_from_slice(&[9; 7]);
    fs::write(segment_path(&dir, 3), &old).expect("write");
    let (seen, r) = read_back(&dir);
    assert_eq!(seen, [0, 1, 2, 3, 4]);
    assert_eq!((r.damaged, r.skipped_bytes), (1, 7));
    // New logs go after it, in the new format.
    let mut j = Journal::open(&dir, u64::MAX, u64::MAX).expect("open");
    j.append(vec![ready(5, 30)]);
    j.close();
    assert_eq!(segments(&dir).expect("list").last().map(|s| s.0), Some(4));
    assert_eq!(read_back(&dir).0, [0, 1, 2, 3, 4, 5]);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_log_number_at_the_top_cannot_wrap_the_next_to_zero() {
    let dir = dir("wrap");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("spans-18446744073709551615.log"), b"junk").expect("write");
    let mut j = Journal::open(&dir, u64::MAX, u64::MAX).expect("open");
    j.append(vec![ready(1, 10)]);
    j.close();
    let logs = segments(&dir).expect("list");
    assert_eq!(logs.iter().map(|s| s.0).collect::<Vec<_>>(), [0]);
    assert_eq!(read_back(&dir).0, [1], "read once");
    // The highest number we take: a new one cannot be made past it.
    fs::write(segment_path(&dir, MAX_SEGMENT), FILE_HEADER).expect("write");
    assert!(Journal::open(&dir, u64::MAX, u64::MAX).is_err());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_large_log_is_read_with_bounded_memory() {
    // A reader over an endless stream of records yields them one by one: nothing is read
    // whole before the first record comes out.
    struct Endless(Vec<u8>, usize);
    impl Read for Endless {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min(self.0.len() - self.1);
            out[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 = (self.1 + n) % self.0.len();
            Ok(n)
        }
    }
    let r = ready(42, 100);
    let len = (r.bytes.len() as u32).to_le_bytes();
    let mut rec = RECORD_MARK.to_vec();
    rec.extend_from_slice(&checksum(&len, &42u128.to_le_bytes(), &r.bytes).to_le_bytes());
    rec.extend_from_slice(&len);
    rec.extend_from_slice(&42u128.to_le_bytes());
    rec.extend_from_slice(&r.bytes);
    let mut reader = Records::new(Endless(rec, 0));
    for _ in 0..100_000 {
        assert_eq!(reader.record_v2().expect("read"), Some(r.bytes.len()));
        reader.skip(RECORD_HEAD + r.bytes.len());
        assert!(reader.buf.capacity() < 1 << 20, "{}", reader.buf.capacity());
    }
}
