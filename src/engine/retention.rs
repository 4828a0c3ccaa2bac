//! Retention (DESIGN §9): executions (with their steps and logs), webhook events and outbound
//! deliveries (with their attempts) older than
//! `retention_days` are purged in the background, in small batches so intake never waits long
//! behind a purge.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{now_millis, Store};

/// Rows deleted per table per write.
const BATCH: u32 = 1000;
/// How often the purge runs (it also runs at start).
const EVERY: Duration = Duration::from_secs(60 * 60);

/// Purges what is older than `days` now and every hour until `shutdown`; `days == 0` keeps
/// everything.
pub fn spawn(
    store: Arc<dyn Store>,
    days: u32,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if days == 0 {
            return;
        }
        loop {
            let cutoff = now_millis() - i64::from(days) * 24 * 60 * 60 * 1000;
            let (mut executions, mut events, mut deliveries) = (0, 0, 0);
            loop {
                let purged = match store.purge_before(cutoff, BATCH).await {
                    Ok(p) => store
                        .purge_deliveries_before(cutoff, BATCH)
                        .await
                        .map(|d| (p, d)),
                    Err(e) => Err(e),
                };
                match purged {
                    Ok((p, d)) => {
                        executions += p.executions;
                        events += p.events;
                        deliveries += d;
                        // Old events may be left in projects this purge did not reach yet.
                        if p.executions < u64::from(BATCH) && !p.more_events && d < u64::from(BATCH)
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "purging old data failed; retrying later");
                        break;
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
            }
            if executions + events + deliveries > 0 {
                tracing::info!(
                    executions,
                    events,
                    deliveries,
                    days,
                    "purged data past retention"
                );
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
        }
    })
}
