//! Announcements between nodes (DESIGN §11) over PostgreSQL `LISTEN/NOTIFY`: a node announces
//! a [`Change`] with `pg_notify`, and every node's listener — one dedicated connection outside
//! the pool — hands it to the node. A listener that loses its connection reconnects by itself
//! and then reports [`Change::Resync`], since announcements made meanwhile are lost.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::store::Change;

/// The channel every node listens on.
pub(super) const CHANNEL: &str = "triggerd_changes";

/// What goes over the channel: the change, and which store sent it (a node ignores its own).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Announcement {
    /// The sending store's random id.
    pub origin: String,
    /// The change.
    pub change: Change,
}

/// How long the listener waits before it tries to reconnect.
const RECONNECT: Duration = Duration::from_millis(500);

/// How often an idle listener checks that its connection still answers, and how long it
/// waits for the answer: a connection cut without a FIN or RST (a half-open TCP connection)
/// otherwise looks idle forever while announcements go nowhere.
const HEARTBEAT: Duration = Duration::from_secs(5);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often a listener reports [`Change::Resync`] anyway: the bound on how stale a node's
/// caches can be should an announcement be lost (a node that committed a change and then
/// lost the database before it could announce it).
const SAFETY_RESYNC: Duration = Duration::from_secs(30);

/// Listens on [`CHANNEL`] until the task is aborted, sending every change announced by another
/// store than `origin` to `changes`.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    origin: String,
    changes: broadcast::Sender<Change>,
) {
    let mut connected_before = false;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (payloads, mut received) = tokio::sync::mpsc::unbounded_channel::<String>();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(n) = message {
                            if payloads.send(n.payload().to_owned()).is_err() {
                                return;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        if connected_before {
                            tracing::info!("listening for other nodes' changes again");
                        }
                        connected_before = true;
                        // Whatever was announced before LISTEN took effect is not coming.
                        let _ = changes.send(Change::Resync);
                        relay(&client, &mut received, &origin, &changes).await;
                        tracing::warn!("lost the connection that listens for other nodes' changes; reconnecting");
                        // Whatever was announced from now until the reconnect is lost.
                        let _ = changes.send(Change::Resync);
                    }
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed; reconnecting"),
                }
                driver.abort();
            }
            Err(e) => {
                tracing::debug!(error = %e, "the change listener cannot connect yet");
            }
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// Relays announcements from other stores until the connection is lost or stops answering
/// the heartbeat.
async fn relay(
    client: &tokio_postgres::Client,
    received: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    origin: &str,
    changes: &broadcast::Sender<Change>,
) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    let mut resync = tokio::time::interval(SAFETY_RESYNC);
    resync.tick().await;
    loop {
        tokio::select! {
            payload = received.recv() => {
                let Some(payload) = payload else { return };
                match serde_json::from_str::<Announcement>(&payload) {
                    Ok(a) if a.origin == origin => {}
                    Ok(a) => {
                        let _ = changes.send(a.change);
                    }
                    Err(e) => tracing::warn!(error = %e, "an announcement that is not ours"),
                }
            }
            _ = resync.tick() => {
                let _ = changes.send(Change::Resync);
            }
            _ = heartbeat.tick() => {
                match tokio::time::timeout(HEARTBEAT_TIMEOUT, client.simple_query("")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "the change listener's heartbeat failed");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!("the change listener's connection stopped answering");
                        return;
                    }
                }
            }
        }
    }
}
