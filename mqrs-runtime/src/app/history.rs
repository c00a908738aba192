//! The RED metrics and the gate's request history over time: slots past their hour or day
//! rolled up or dropped (recording does it too, but not for a series no one records into any
//! more), closed connections' histories swept out as they age and, with `[trace] data_dir`,
//! the history saved there (read back by `viewer.rs` when the store is made).

use std::time::Duration;

use super::handle::App;

/// The request history's file in `[trace] data_dir`.
pub(super) const HISTORY_FILE: &str = "history.bin";

/// How often closed connections' histories are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// How often the history is saved to the data directory (and once more on a clean stop): a
/// full history is some MiB, not to be written every few seconds.
const SAVE_EVERY: u32 = 6;

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Ages the RED metrics, sweeps closed connections' histories out as they age and, with a
/// data directory, saves the history every [`SAVE_EVERY`] sweeps (a minute) and once more
/// when the app stops.
pub(super) fn keep(app: &App) {
    let Some(history) = app.inner.tracing.history().cloned() else {
        return;
    };
    let red = app.inner.tracing.red().clone();
    let dir = app.inner.config.trace.data_dir.clone();
    let file = (!dir.is_empty()).then(|| std::path::Path::new(&dir).join(HISTORY_FILE));
    let mut stop = app.inner.shutdown.subscribe();
    let task = tokio::spawn(async move {
        let mut sweeps = 0u32;
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => false,
                _ = stop.changed() => true,
            };
            sweeps += 1;
            let save = stopping || sweeps.is_multiple_of(SAVE_EVERY);
            let (h, f) = (history.clone(), file.clone().filter(|_| save));
            let red = red.clone();
            let _ = tokio::task::spawn_blocking(move || {
                red.age(now_ms() / 1000);
                h.sweep(now_ms());
                if let Some(f) = f {
                    if let Err(e) = h.save(&f) {
                        tracing::warn!(error = %e, file = %f.display(), "the request history is not saved");
                    }
                }
            })
            .await;
            if stopping {
                return;
            }
        }
    });
    app.push_task(task);
}
