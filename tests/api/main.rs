//! Integration tests: the real server on a loopback port, a real SQLite file per test.

mod helpers;

mod apikeys;
mod browser;
mod cli;
mod conditions;
mod console;
mod durability;
mod engine;
mod event_rules;
mod filters;
mod intake;
mod isolation;
mod management;
mod mandate;
mod memory;
mod nodes;
mod openapi;
mod priority;
mod robustness;
mod secrets;
mod status;
mod store;
mod tenancy;
mod tls;
