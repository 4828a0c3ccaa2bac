//! The server side of the command line: `serve`, `init`, `migrate` and `admin`.

use std::future::Future;
use std::path::PathBuf;

use clap::Subcommand;

use super::{CliError, CliResult, DatabaseArgs, Exit};
use crate::bootstrap::{self, RootKeys};
use crate::config::{Overrides, Settings};
use crate::startup::{shutdown_signal, Application};
use crate::{store, telemetry};

/// `triggerd admin ...`.
#[derive(Subcommand)]
pub enum AdminCommand {
    /// Replace every root key with a new one and print it once. Works offline, on the database,
    /// for a lost key. With TRIGGERD_ROOT_KEY set, that key becomes the root key instead.
    #[command(
        after_help = "Example:\n  triggerd admin reset-root-key --database-url sqlite://triggerd.db"
    )]
    ResetRootKey {
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

fn settings(config: Option<PathBuf>, overrides: Overrides) -> Result<Settings, CliError> {
    let settings = Settings::load(config.as_deref(), &overrides)
        .map_err(|e| CliError::usage(e.to_string()))?;
    telemetry::init(&settings.log);
    Ok(settings)
}

fn block_on<F: Future<Output = anyhow::Result<()>>>(f: F) -> CliResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::refused(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(f)?;
    Ok(Exit::Success)
}

/// `TRIGGERD_ROOT_KEY`, when set and not empty.
fn configured_root_key() -> Option<String> {
    std::env::var("TRIGGERD_ROOT_KEY")
        .ok()
        .filter(|k| !k.is_empty())
}

/// `triggerd serve`.
pub fn serve(
    config: Option<PathBuf>,
    demo: bool,
    listen: Option<String>,
    db: DatabaseArgs,
    public_url: Option<String>,
) -> CliResult {
    let mut settings = settings(
        config,
        Overrides {
            listen,
            database_url: db.database_url,
            public_url,
        },
    )?;
    // Run steps run under this same binary's `supervise-step`.
    settings.step_supervisor = std::env::current_exe().ok();
    // Run steps are children running as the same user: without this they could read this
    // process's memory and /proc/<pid>/environ (which may hold TRIGGERD_ROOT_KEY).
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!(error = %e, "could not make the process non-dumpable");
    }
    if demo {
        // The demo's event rule delivers to a receiver on this machine.
        let loopback = "127.0.0.0/8".to_owned();
        if !settings.outbound.allowed_cidrs.contains(&loopback) {
            settings.outbound.allowed_cidrs.push(loopback);
        }
    }
    block_on(async move {
        let app = Application::build(&settings).await?;
        let gateway = app.gateway();
        let root_key = configured_root_key();
        let keys = RootKeys {
            store: gateway.store.as_ref(),
            verifier: &gateway.keys,
        };
        match keys.ensure(root_key.as_deref()).await? {
            Some(key) => print_root_key(&key),
            None if root_key.is_none() => println!(
                "{} already has a root key; it was printed once, when the database was created. \
                 Use that key, or replace it with `triggerd admin reset-root-key`.",
                settings.database_url
            ),
            None => {}
        }
        if demo {
            let seeded = bootstrap::seed_demo(&gateway).await?;
            println!();
            println!("Demo ready. Fire the demo trigger with:");
            println!();
            println!("  {}", seeded.trigger.curl);
            println!();
            println!("Open the console and sign in with the root key:");
            println!(
                "  {}",
                crate::service::links::ui_setup_url(
                    &gateway.public_url,
                    &seeded.project,
                    &seeded.trigger.pipeline_identifier,
                    &seeded.trigger.identifier
                )
            );
            println!();
            println!("The response's data.apiUrl is the status URL to poll, e.g.:");
            println!("  curl -s '{}/webhook/triggerExecutionDetails/<eventCorrelationId>?accountIdentifier=demo'", gateway.public_url);
            println!();
            println!(
                "Pipeline and stage events go to {} (signed, retried). To watch them:",
                bootstrap::DEMO_RECEIVER_URL
            );
            println!(
                "  cargo run --example receiver -- --secret '{}'",
                seeded.signing_secret
            );
            println!();
        }
        app.run_until_stopped(shutdown_signal()).await
    })
}

/// Opens (creating and migrating) the database, runs `f` on it, and closes it.
fn offline<F, Fut>(config: Option<PathBuf>, db: DatabaseArgs, f: F) -> CliResult
where
    F: FnOnce(Settings, std::sync::Arc<dyn store::Store>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let settings = settings(
        config,
        Overrides {
            database_url: db.database_url,
            ..Overrides::default()
        },
    )?;
    block_on(async move {
        let store = store::open(&settings).await?;
        let result = f(settings, store.clone()).await;
        store.close().await;
        result
    })
}

/// `triggerd init`: creates and migrates the database and prints the root key once.
pub fn init(config: Option<PathBuf>, db: DatabaseArgs) -> CliResult {
    offline(config, db, |settings, store| async move {
        let verifier = settings.key_verifier();
        let keys = RootKeys {
            store: store.as_ref(),
            verifier: &verifier,
        };
        let configured = configured_root_key();
        match keys.ensure(configured.as_deref()).await? {
            Some(key) => print_root_key(&key),
            None if configured.is_some() => {
                println!(
                    "{} is ready; its root key is TRIGGERD_ROOT_KEY.",
                    settings.database_url
                )
            }
            None => println!(
                "{} is ready and already has a root key; nothing to do. \
                 A lost root key is replaced with `triggerd admin reset-root-key`.",
                settings.database_url
            ),
        }
        Ok(())
    })
}

/// `triggerd migrate`.
pub fn migrate(config: Option<PathBuf>, db: DatabaseArgs) -> CliResult {
    let settings = settings(
        config,
        Overrides {
            database_url: db.database_url,
            ..Overrides::default()
        },
    )?;
    block_on(async move {
        println!("{}", store::migrate(&settings).await?);
        Ok(())
    })
}

/// `triggerd admin ...`.
pub fn admin(config: Option<PathBuf>, command: AdminCommand) -> CliResult {
    match command {
        AdminCommand::ResetRootKey { db } => offline(config, db, |settings, store| async move {
            let verifier = settings.key_verifier();
            let keys = RootKeys {
                store: store.as_ref(),
                verifier: &verifier,
            };
            let configured = configured_root_key();
            let (key, revoked) = keys.reset(configured.as_deref()).await?;
            println!(
                "Revoked {revoked} root key(s) in {}. Servers on it refuse them at once on \
                 PostgreSQL, within auth.key_cache_ttl_secs on SQLite.",
                settings.database_url
            );
            match key {
                Some(key) => print_root_key(&key),
                None => println!("The root key is now TRIGGERD_ROOT_KEY."),
            }
            Ok(())
        }),
    }
}

fn print_root_key(key: &crate::domain::ids::ApiKey) {
    println!();
    println!("Root API key (shown once; store it safely, it manages every account):");
    println!();
    println!("  {}", key.expose_secret());
    println!();
}
