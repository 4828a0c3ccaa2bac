//! Outbound event rules (DESIGN §8): Standard Webhooks signing, the SSRF guard, one delivery
//! attempt, and the dispatcher that drains the outbox and retries on the schedule.

pub mod deliver;
pub mod dispatcher;
pub mod events;
pub mod guard;
pub mod health;
pub mod signature;
