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
                            let _ = changes.send(Change::Resync);
                        }
                        connected_before = true;
                        while let Some(payload) = received.recv().await {
                            match serde_json::from_str::<Announcement>(&payload) {
                                Ok(a) if a.origin == origin => {}
                                Ok(a) => {
                                    let _ = changes.send(a.change);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "an announcement that is not ours")
                                }
                            }
                        }
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
