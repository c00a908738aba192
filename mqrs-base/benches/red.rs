//! `cargo bench -p mqrs-base --bench red`: what counting one call costs, in ns: a series
//! found by name and counted (what the client side does per call), a series held and counted
//! (the server side), both from one thread and from two threads on the same series (a gate's
//! hot route on a 2-core machine), and reading a busy hour back.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use mqrs_base::red::{Kind, Red};

const N: u64 = 5_000_000;

fn per_call(label: &str, threads: u64, f: impl Fn(u64) + Sync) {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let f = &f;
            s.spawn(move || {
                for i in 0..N / threads {
                    f(t * N + i);
                }
            });
        }
    });
    let ns = start.elapsed().as_nanos() as f64 / N as f64 * threads as f64;
    println!("{label:<58} {ns:>7.1} ns per call");
}

fn main() {
    let red = Arc::new(Red::default());
    let table = red.table(Kind::Client, "Chat");
    let held = red
        .table(Kind::Server, "Login")
        .series("Login/track", || "Login/track".into());
    let now = mqrs_base::red::now_s();
    // Durations spread over two decades, as a real route's are.
    let ns = |i: u64| 20_000 + (i * 7919) % 2_000_000;
    for threads in [1, 2] {
        per_call(&format!("held series, {threads} thread(s)"), threads, |i| {
            held.record_at(now + i / 1_000_000, ns(i), None);
        });
        per_call(
            &format!("series found by name, {threads} thread(s)"),
            threads,
            |i| {
                let s = table.series(black_box("Login/track"), || "Login/track".into());
                s.record_at(now + i / 1_000_000, ns(i), None);
            },
        );
        per_call(
            &format!("series found in the thread's cache, {threads} thread(s)"),
            threads,
            |i| {
                red.with_series(
                    Kind::Client,
                    "Chat",
                    (black_box("Login"), "track"),
                    "",
                    |s| s.record_at(now + i / 1_000_000, ns(i), None),
                );
            },
        );
    }
    per_call(
        "finding a series in the thread's cache, nothing counted",
        1,
        |_| {
            red.with_series(
                Kind::Client,
                "Chat",
                (black_box("Login"), "track"),
                "",
                |s| {
                    black_box(s);
                },
            );
        },
    );
    let start = Instant::now();
    let rows = red.rows(0, u64::MAX);
    println!(
        "reading {} rows back: {:.2} ms; registry {:?}",
        rows.len(),
        start.elapsed().as_secs_f64() * 1e3,
        red.stats()
    );
}
