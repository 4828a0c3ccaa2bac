//! # triggerd
//!
//! A self-hosted gateway that starts pipelines from webhooks, wire-compatible with Harness
//! custom triggers. The external contract is `DESIGN.md`; this crate is its implementation.
//!
//! ## Layout
//! - [`config`]: typed settings (defaults → `triggerd.toml` → `TRIGGERD_*` → flags).
//! - [`startup`]: builds the application and runs it until shutdown.
//! - [`tls`]: built-in HTTPS (rustls), its certificate read again on SIGHUP.
//! - [`memory`]: handing freed memory back to the system (the call itself is `main.rs`'s: this
//!   crate has no unsafe code).
//! - [`domain`]: identifiers, keys, triggers, pipelines, settings, condition matching and
//!   runtime input; pure and unit-tested.
//! - [`expr`]: the `<+...>` references and the JEXL subset (tokenizer, parser, evaluator).
//! - [`engine`]: the execution queue, workers and step runners.
//! - [`auth`]: API key verification, roles, the key cache.
//! - [`store`]: the storage trait, its SQLite backend (all SQL lives here) and the hot cache.
//! - [`service`]: the use cases (intake, status, management) the HTTP layer calls.
//! - [`http`]: routes, envelopes, middleware; one module per resource.
//! - [`console`]: the web console under `/ui/`, another front end of [`service`].
//! - [`bootstrap`]: the root key and the demo.
//! - [`cli`]: the command line, server commands and the REST client.
//!
//! Dependencies point inward: `http`/`console` → `service`/`engine` → `auth`/`domain`/`expr` → `store`.

#![forbid(unsafe_code)]

pub mod auth;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod console;
pub mod domain;
pub mod engine;
pub mod error;
pub mod expr;
pub mod http;
pub mod memory;
pub mod outbound;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
