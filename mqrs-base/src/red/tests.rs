use super::histogram::RELATIVE_ERROR;
use super::*;

fn series(red: &Red) -> Arc<Series> {
    red.table(Kind::Server, "M").series("M/f", || "M/f".into())
}

#[test]
fn counts_are_exact_and_percentiles_within_the_stated_error() {
    let red = Red::default();
    let s = series(&red);
    // 10,000 calls spread over 1 µs .. 100 ms, log-uniform, one in 7 failing.
    let mut truth = Vec::new();
    for i in 0..10_000u64 {
        let ns = (1_000.0 * (100_000f64).powf(i as f64 / 10_000.0)) as u64;
        truth.push(ns);
        let error = (i % 7 == 0).then_some("timeout");
        s.record_at(1_000_000 + i / 100, ns, error);
    }
    let read = s.read(1_000_000, 1_000_100);
    let mut all = Tally::default();
    for o in &read {
        all.merge(&o.tally, true);
    }
    assert_eq!(all.count, 10_000);
    assert_eq!(read[1].tally.count, 10_000u64.div_ceil(7));
    assert_eq!(all.sum_ns, truth.iter().sum::<u64>());
    truth.sort_unstable();
    for p in [50.0, 90.0, 95.0, 99.0, 99.9] {
        let rank = (p / 100.0 * 10_000.0_f64).ceil() as usize;
        let exact = truth[rank - 1] as f64;
        let got = all.percentile_ns(p) as f64;
        assert!(
            (got - exact).abs() / exact <= RELATIVE_ERROR,
            "p{p}: {got} vs {exact}"
        );
    }
    assert_eq!(all.percentile_ns(100.0), *truth.last().expect("some"));
    // A window reads only its slots.
    let first = s.read(1_000_000, 1_000_010);
    assert_eq!(first.iter().map(|o| o.tally.count).sum::<u64>(), 1_000);
}

#[test]
fn recent_slots_roll_up_after_an_hour_and_go_after_a_day() {
    let red = Red::default();
    let s = series(&red);
    let t0 = 10_000_000;
    for i in 0..60 {
        s.record_at(t0 + i * 10, 1_000_000, None);
    }
    // An hour later the first 10 s slots are 5 min slots: the counts stay.
    s.record_at(t0 + 3_700, 1_000_000, None);
    assert_eq!(s.read(t0, t0 + 600)[0].tally.count, 60);
    assert_eq!(s.read(t0, t0 + 300)[0].tally.count, 30);
    let bytes = red.stats().bytes;
    assert!(bytes > 0);
    // A day later only the newest call is left, and the memory is given back.
    s.record_at(t0 + 86_400 + 3_400, 1_000_000, None);
    assert_eq!(s.read(0, u64::MAX)[0].tally.count, 2);
    red.age(t0 + 86_400 * 3);
    assert!(s.read(0, u64::MAX).is_empty());
    assert_eq!(red.stats().bytes, 0, "{:?}", red.stats());
    // Totals never go down.
    assert_eq!(s.totals()[0].1.count, 62);
}

#[test]
fn memory_is_bounded_and_calls_are_still_counted() {
    let red = Red::with_limit(4_000);
    let s = series(&red);
    for i in 0..1_000u64 {
        s.record_at(5_000_000 + i * 10, 1_000 + i * 7_919 % 1_000_000, Some("x"));
    }
    let stats = red.stats();
    assert!(stats.bytes < 6_000, "{stats:?}");
    assert!(stats.squeezed > 0);
    let read = s.read(0, u64::MAX);
    assert_eq!(read.iter().map(|o| o.tally.count).sum::<u64>(), 1_000);
}

#[test]
fn error_types_and_methods_are_bounded() {
    let red = Red::default();
    let s = series(&red);
    for i in 0..40 {
        s.record_at(100, 1_000, Some(&format!("e{i}")));
    }
    let read = s.read(0, 1_000);
    // Success (no calls here) and the error types share the bound.
    assert_eq!(read.len(), MAX_OUTCOMES - 1);
    assert_eq!(
        read.last().and_then(|o| o.error.as_deref()),
        Some(OTHER_ERROR)
    );
    let t = red.table(Kind::Client, "C");
    for i in 0..MAX_SERIES + 10 {
        t.series(&format!("X/m{i}"), || format!("X/m{i}"));
    }
    assert_eq!(red.stats().series, MAX_SERIES + 1);
    assert_eq!(
        &*t.series("X/new", || "X/new".into()).key().method,
        OTHER_METHOD
    );
}

#[test]
fn late_calls_merge_into_their_own_slot() {
    let red = Red::default();
    let s = series(&red);
    s.record_at(2_000_000, 1_000, None);
    let mut tally = Tally::default();
    tally.merge(
        &{
            let other = Red::default();
            let o = series(&other);
            o.record_at(1_999_950, 5_000, None);
            o.record_at(1_999_950, 6_000, None);
            o.read(0, u64::MAX)[0].tally.clone()
        },
        true,
    );
    s.merge_at(1_999_950, None, &tally, &Totals::default());
    assert_eq!(s.read(1_999_950, 1_999_960)[0].tally.count, 2);
    assert_eq!(s.read(2_000_000, 2_000_010)[0].tally.count, 1);
    let slots = s.recent_slots(0, u64::MAX);
    assert_eq!(
        slots
            .iter()
            .map(|(t, _, c)| (*t, c.count))
            .collect::<Vec<_>>(),
        [(1_999_950, 2), (2_000_000, 1)]
    );
}

#[test]
fn a_step_counts_the_calls_of_its_own_second() {
    let red = Red::default();
    let s = series(&red);
    // A call in the first second of a slot, read at that very second.
    s.record_at(1_000, 5_000, None);
    let steps = red.steps(|k| Some(k.service.to_string()), 990, 1_000, 10, 600);
    let points = &steps["M"];
    assert_eq!(
        points.last().map(|p| (p.at_s, p.all.count)),
        Some((1_000, 1))
    );
    assert_eq!(points[0].all.count, 0, "the step before it holds nothing");
}
