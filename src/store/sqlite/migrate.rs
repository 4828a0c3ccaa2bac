//! Embedded SQL migrations, tracked with `PRAGMA user_version`.
//!
//! A dozen lines do what a migration crate would: every file under `migrations/sqlite/` is
//! compiled into the binary and applied once, in order, each in its own transaction.

use rusqlite::Connection;

use crate::store::{StoreError, StoreResult};

/// The migrations, in order; version N is the N-th entry.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_initial.sql",
        include_str!("../../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        "0002_engine.sql",
        include_str!("../../../migrations/sqlite/0002_engine.sql"),
    ),
    (
        "0003_outbound.sql",
        include_str!("../../../migrations/sqlite/0003_outbound.sql"),
    ),
    (
        "0004_constraints.sql",
        include_str!("../../../migrations/sqlite/0004_constraints.sql"),
    ),
    (
        "0005_lease_tokens.sql",
        include_str!("../../../migrations/sqlite/0005_lease_tokens.sql"),
    ),
    (
        "0006_claim_index.sql",
        include_str!("../../../migrations/sqlite/0006_claim_index.sql"),
    ),
    (
        "0007_step_log_lines.sql",
        include_str!("../../../migrations/sqlite/0007_step_log_lines.sql"),
    ),
    (
        "0008_console_sessions.sql",
        include_str!("../../../migrations/sqlite/0008_console_sessions.sql"),
    ),
    (
        "0009_ascending_indexes.sql",
        include_str!("../../../migrations/sqlite/0009_ascending_indexes.sql"),
    ),
    (
        "0010_steps_by_time.sql",
        include_str!("../../../migrations/sqlite/0010_steps_by_time.sql"),
    ),
    (
        "0011_event_rowids.sql",
        include_str!("../../../migrations/sqlite/0011_event_rowids.sql"),
    ),
    (
        "0012_events_purged_by_project.sql",
        include_str!("../../../migrations/sqlite/0012_events_purged_by_project.sql"),
    ),
];

/// The schema version a fully migrated database has.
pub(super) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Applies every migration newer than the database's `user_version`. Returns how many ran.
pub(super) fn apply(conn: &mut Connection) -> StoreResult<usize> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| StoreError::db("reading the schema version", e))?;
    if current > latest_version() {
        return Err(StoreError::db(
            "checking the schema version",
            NewerSchema(current, latest_version()),
        ));
    }
    let pending = &MIGRATIONS[current as usize..];
    for (i, (name, sql)) in pending.iter().enumerate() {
        let version = current + i as i64 + 1;
        let tx = conn
            .transaction()
            .map_err(|e| StoreError::db("starting a migration", e))?;
        tx.execute_batch(sql)
            .and_then(|_| tx.pragma_update(None, "user_version", version))
            .and_then(|_| tx.commit())
            .map_err(|e| StoreError::db(format!("applying migration {name}"), e))?;
        tracing::info!(migration = name, "applied migration");
    }
    Ok(pending.len())
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the database has schema version {0}, newer than this triggerd knows ({1}); upgrade triggerd"
)]
struct NewerSchema(i64, i64);

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory database with the first `version` migrations applied.
    fn migrated_to(version: usize) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        for (_, sql) in &MIGRATIONS[..version] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", version as i64)
            .unwrap();
        conn
    }

    #[test]
    fn migrations_apply_once_and_set_the_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(apply(&mut conn).unwrap(), MIGRATIONS.len());
        assert_eq!(apply(&mut conn).unwrap(), 0);
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest_version());
    }

    #[test]
    fn a_database_holding_two_root_keys_migrates_and_keeps_both() {
        let mut conn = migrated_to(3);
        for id in ["a", "b"] {
            conn.execute(
                "INSERT INTO api_keys (key_id, account_id, name, role, hash, created_at) \
                 VALUES (?1, '_root', 'root', 'admin', 'h', 1)",
                [id],
            )
            .unwrap();
        }
        assert_eq!(apply(&mut conn).unwrap(), MIGRATIONS.len() - 3);
        let live: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM api_keys WHERE account_id = '_root' AND revoked_at IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(live, 2);
    }

    #[test]
    fn steps_move_to_their_executions_time_and_go_with_their_execution() {
        let mut conn = migrated_to(9);
        for (id, created_at) in [("a", 20), ("b", 10)] {
            conn.execute(
                "INSERT INTO executions (plan_execution_id, account_id, org_id, project_id, \
                 pipeline_id, pipeline_name, status, trigger_type, run_sequence, runtime_input, \
                 created_at) VALUES (?1, 'acc', 'org', 'proj', 'p', 'P', 'Running', 'MANUAL', 1, '', ?2)",
                rusqlite::params![id, created_at],
            )
            .unwrap();
            for step in 0..2 {
                conn.execute(
                    "INSERT INTO execution_steps (plan_execution_id, stage_index, step_index, \
                     stage_id, stage_name, step_id, step_name, step_type, status) \
                     VALUES (?1, 0, ?2, 's', 'S', 'x', 'X', 'Wait', 'Success')",
                    rusqlite::params![id, step],
                )
                .unwrap();
            }
        }
        assert_eq!(apply(&mut conn).unwrap(), MIGRATIONS.len() - 9);
        let steps = |id: &str| -> Vec<(i64, i64)> {
            conn.prepare(&format!(
                "SELECT execution_created_at, step_index FROM execution_steps \
                 WHERE {} ORDER BY stage_index, step_index",
                super::super::executions::STEPS_OF
            ))
            .unwrap()
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
        };
        assert_eq!(steps("a"), [(20, 0), (20, 1)]);
        assert_eq!(steps("b"), [(10, 0), (10, 1)]);
        conn.execute("DELETE FROM executions WHERE plan_execution_id = 'a'", [])
            .unwrap();
        assert_eq!(steps("a"), []);
        assert_eq!(
            steps("b"),
            [(10, 0), (10, 1)],
            "the other execution's steps stay"
        );
        let left: i64 = conn
            .query_row("SELECT COUNT(*) FROM execution_steps", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 2);
    }

    #[test]
    fn events_stored_before_keep_their_ids_and_new_ones_lead_to_their_rows() {
        use super::super::event_ids::EventIds;
        use super::super::read_event;
        use crate::domain::ids::EventId;

        let insert = |conn: &Connection, rowid: Option<i64>, id: &str| {
            conn.execute(
                "INSERT INTO webhook_events (rowid, event_id, account_id, org_id, project_id, \
                 pipeline_id, trigger_id, status, message, exception_occured, payload, headers, \
                 runtime_input, condition_results, created_at) \
                 VALUES (?1, ?2, 'acc', 'org', 'proj', 'p', 't', 'SUCCESS', '', 0, '{}', '{}', '', '[]', 1)",
                rusqlite::params![rowid, id],
            )
            .unwrap();
        };
        let mut conn = migrated_to(10);
        let legacy = ["0123456789abcdef01234567", "fedcba9876543210fedcba98"];
        for id in legacy {
            insert(&conn, None, id);
        }
        assert_eq!(apply(&mut conn).unwrap(), MIGRATIONS.len() - 10);
        let ids = EventIds::load(&conn).unwrap();
        let read = |ids: &EventIds, id: &EventId| {
            read_event(&conn, ids, id)
                .unwrap()
                .map(|e| e.event_id.as_str().to_owned())
        };
        for id in legacy {
            assert_eq!(
                read(&ids, &EventId::parse(id).unwrap()).as_deref(),
                Some(id)
            );
        }

        // A new id leads to the rowid after the last event's, where the event is stored.
        let minted = ids.mint();
        assert_eq!(ids.rowid(&minted), 3);
        insert(&conn, Some(3), minted.as_str());
        assert_eq!(read(&ids, &minted).as_deref(), Some(minted.as_str()));
        let in_legacy_index: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM webhook_events WHERE legacy_id IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(in_legacy_index, 2, "only the events stored before");

        // An altered id finds nothing; the key is kept, and minting goes on after the last row.
        let mut altered = minted.to_bytes();
        altered[0] ^= 0x80;
        assert_eq!(read(&ids, &EventId::from_bytes(altered)), None);
        let reopened = EventIds::load(&conn).unwrap();
        assert_eq!(read(&reopened, &minted).as_deref(), Some(minted.as_str()));
        assert_eq!(reopened.rowid(&reopened.mint()), 4);

        // A database whose key is gone while events minted with it remain is refused, not
        // given a new key that would lead their ids nowhere.
        conn.execute("DELETE FROM store_keys", []).unwrap();
        assert!(EventIds::load(&conn).is_err());
    }

    #[test]
    fn old_events_are_purged_project_by_project_without_an_index_of_their_times() {
        use super::super::executions::{purge_events, NEXT_EVENT_PROJECT, PURGE_PROJECT_EVENTS};
        use crate::store::executions::{ProjectKey, PURGE_PROJECTS};

        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn).unwrap();
        let insert = |conn: &Connection,
                      project: (&str, &str, &str),
                      created_at: i64,
                      execution: Option<&str>| {
            conn.execute(
                "INSERT INTO webhook_events (event_id, account_id, org_id, project_id, \
                 pipeline_id, trigger_id, status, message, exception_occured, payload, headers, \
                 runtime_input, condition_results, plan_execution_id, created_at) \
                 VALUES ('e', ?1, ?2, ?3, 'p', 't', 'SUCCESS', '', 0, '{}', '{}', '', '[]', ?5, ?4)",
                rusqlite::params![project.0, project.1, project.2, created_at, execution],
            )
            .unwrap();
        };
        let (a, b, c) = (
            ("acc", "org", "a"),
            ("acc", "org", "b"),
            ("acc", "org", "c"),
        );
        let (other_org, other_account) = (("acc", "org2", "a"), ("acc2", "org", "a"));
        // In the order stored: an event stamped far ahead of the clock first, then old events
        // of five projects in two orgs and two accounts, recent ones, and an old one whose
        // execution is still there.
        for (project, created_at, execution) in [
            (a, 1_000_000, None),
            (a, 10, None),
            (b, 20, None),
            (other_account, 25, None),
            (a, 30, None),
            (other_org, 15, None),
            (c, 100, None),
            (b, 40, None),
            (a, 100, None),
            (other_account, 35, None),
            (c, 45, Some("x")),
            (c, 49, None),
        ] {
            insert(&conn, project, created_at, execution);
        }
        conn.execute(
            "INSERT INTO executions (plan_execution_id, account_id, org_id, project_id, \
             pipeline_id, pipeline_name, status, trigger_type, run_sequence, runtime_input, \
             created_at) VALUES ('x', 'acc', 'org', 'c', 'p', 'P', 'Running', 'MANUAL', 1, '', 45)",
            [],
        )
        .unwrap();

        // Both walks are ranges of the listing index; no index of the events' times is left
        // to write.
        let plan = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> String {
            conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(params, |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap()
                .join("; ")
        };
        let next = plan(NEXT_EVENT_PROJECT, &[&"", &"", &""]);
        assert!(
            next.contains("USING COVERING INDEX webhook_events_by_project ((account_id,org_id,project_id)>(?,?,?))"),
            "{next}"
        );
        let purge = plan(PURGE_PROJECT_EVENTS, &[&"acc", &"org", &"a", &50, &1]);
        assert!(
            purge.contains(
                "USING INDEX webhook_events_by_project (account_id=? AND org_id=? AND project_id=? AND created_at<?)"
            ),
            "{purge}"
        );
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM pragma_index_list('webhook_events')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(!indexes.iter().any(|i| i.contains("time")), "{indexes:?}");

        // Batches of 3, each going on where the last stopped, within a project and across
        // projects, orgs and accounts, until the walk reaches the end.
        let mut from = ProjectKey::default();
        let mut purged = Vec::new();
        loop {
            let n = purge_events(&conn, 50, 3, &mut from).unwrap();
            purged.push(n);
            if n < 3 {
                break;
            }
        }
        assert_eq!(purged, [3, 3, 2]);
        assert_eq!(from, ProjectKey::default(), "the next purge starts over");
        let left: Vec<(String, i64)> = conn
            .prepare("SELECT project_id, created_at FROM webhook_events ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let left: Vec<(&str, i64)> = left.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        assert_eq!(left, [("a", 1_000_000), ("c", 100), ("a", 100), ("c", 45)]);
        assert_eq!(purge_events(&conn, 50, 3, &mut from).unwrap(), 0);
        conn.execute("DELETE FROM executions", []).unwrap();
        assert_eq!(purge_events(&conn, 50, 3, &mut from).unwrap(), 1);

        // One purge visits at most PURGE_PROJECTS projects; the next goes on after them.
        conn.execute("DELETE FROM webhook_events", []).unwrap();
        for i in 0..PURGE_PROJECTS + 10 {
            insert(&conn, ("acc", "org", &format!("p{i:04}")), 10, None);
        }
        let mut from = ProjectKey::default();
        assert_eq!(
            purge_events(&conn, 50, 10_000, &mut from).unwrap(),
            PURGE_PROJECTS
        );
        assert_eq!(purge_events(&conn, 50, 10_000, &mut from).unwrap(), 10);
        assert_eq!(purge_events(&conn, 50, 10_000, &mut from).unwrap(), 0);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(apply(&mut conn).is_err());
    }
}
