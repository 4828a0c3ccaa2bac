//! Embedded SQL migrations, tracked in `schema_migrations(version, applied_at)`.
//!
//! Every file under `migrations/postgres/` is compiled into the binary and applied once, in
//! order, each in its own transaction, while this connection holds a session advisory lock:
//! nodes that start together on an empty database take turns, and the later ones find nothing
//! left to do.

use tokio_postgres::Client;

use super::{pg_err, PgResultExt as _};
use crate::store::{now_millis, StoreError, StoreResult};

/// The migrations, in order; version N is the N-th entry.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_initial.sql",
        include_str!("../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        "0002_lease_tokens.sql",
        include_str!("../../../migrations/postgres/0002_lease_tokens.sql"),
    ),
    (
        "0003_step_log_lines.sql",
        include_str!("../../../migrations/postgres/0003_step_log_lines.sql"),
    ),
    (
        "0004_console_sessions.sql",
        include_str!("../../../migrations/postgres/0004_console_sessions.sql"),
    ),
    (
        "0005_claim_index.sql",
        include_str!("../../../migrations/postgres/0005_claim_index.sql"),
    ),
    (
        "0006_claim_expression.sql",
        include_str!("../../../migrations/postgres/0006_claim_expression.sql"),
    ),
    (
        "0007_events_purged_by_project.sql",
        include_str!("../../../migrations/postgres/0007_events_purged_by_project.sql"),
    ),
    (
        "0008_event_seq.sql",
        include_str!("../../../migrations/postgres/0008_event_seq.sql"),
    ),
    (
        "0009_steps_without_foreign_keys.sql",
        include_str!("../../../migrations/postgres/0009_steps_without_foreign_keys.sql"),
    ),
];

/// The advisory lock key that serialises migrations ("trgd" "migr" in ASCII).
const MIGRATION_LOCK: i64 = 0x7472_6764_6d69_6772;

/// The schema version a fully migrated database has.
pub(super) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Applies every migration the database lacks. Returns how many ran.
pub(super) async fn apply(client: &mut Client) -> StoreResult<usize> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .ctx("waiting for the migration lock")?;
    let applied = apply_locked(client, MIGRATIONS).await;
    // Released explicitly: the connection may outlive this call.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .ctx("releasing the migration lock");
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

/// Applies the first migrations, up to and without the first one past `until`, as [`apply`]
/// does; for tests of what a migration does to the rows before it.
#[cfg(test)]
pub(super) async fn apply_until(client: &mut Client, until: usize) -> StoreResult<usize> {
    apply_locked(client, &MIGRATIONS[..until]).await
}

async fn apply_locked(client: &mut Client, migrations: &[(&str, &str)]) -> StoreResult<usize> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version     BIGINT PRIMARY KEY,
                 applied_at  BIGINT NOT NULL
             )",
        )
        .await
        .ctx("creating the migrations table")?;
    let current: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .ctx("reading the schema version")?;
    if current > latest_version() {
        return Err(StoreError::db(
            "checking the schema version",
            NewerSchema(current, latest_version()),
        ));
    }
    let pending = migrations.get(current as usize..).unwrap_or_default();
    for (i, (name, sql)) in pending.iter().enumerate() {
        let version = current + i as i64 + 1;
        let tx = client.transaction().await.ctx("starting a migration")?;
        let context = format!("applying migration {name}");
        tx.batch_execute(sql).await.map_err(pg_err(&context))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&version, &now_millis()],
        )
        .await
        .map_err(pg_err(&context))?;
        tx.commit().await.map_err(pg_err(&context))?;
        tracing::info!(migration = name, "applied migration");
    }
    Ok(pending.len())
}

/// The version a migrated database is at.
pub(super) async fn current_version(
    client: &impl deadpool_postgres::GenericClient,
) -> StoreResult<i64> {
    client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .ctx("reading the schema version")
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the database has schema version {0}, newer than this triggerd knows ({1}); upgrade triggerd"
)]
struct NewerSchema(i64, i64);
