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
    run_on(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        f,
    )
}

fn run_on<F: Future<Output = anyhow::Result<()>>>(
    runtime: std::io::Result<tokio::runtime::Runtime>,
    f: F,
) -> CliResult {
    let runtime =
        runtime.map_err(|e| CliError::refused(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(f)?;
    Ok(Exit::Success)
}

/// The runtime of `serve`. Its threads run the engine and the other background work (outbound
/// deliveries, retention); actix answers HTTP on worker threads of its own. They run `nice`
/// steps below the rest of the process, so that when the cores are busy, webhooks and status
/// polls are answered first and the queue drains with what is left.
///
/// What `block_on` runs stays on the calling thread at the process's priority, and so do the
/// threads started from it (a thread starts at its creator's priority): the HTTP workers, the
/// SQLite writer and the argon2 pool. The Run steps' spawner is set to the engine's priority
/// (`Spawner::start`), so steps neither starve the engine that runs them nor outrank webhooks.
fn serve_runtime(nice: i32) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(crate::memory::now_and_then)
        .on_thread_start(move || {
            // Linux keeps a priority per thread.
            if nice > 0 {
                if let Err(e) = crate::engine::lower_priority(rustix::thread::gettid(), nice) {
                    tracing::warn!(error = %e, "could not lower the priority of a background thread");
                }
            }
        })
        .build()
}

/// `TRIGGERD_ROOT_KEY`, when set and not empty, or the key [`root_key_out_of_environment`]
/// handed over.
fn configured_root_key() -> Option<String> {
    std::env::var("TRIGGERD_ROOT_KEY")
        .ok()
        .or_else(|| HANDED_OVER.get().cloned())
        .filter(|k| !k.is_empty())
}

/// The root key as handed over through `TRIGGERD_ROOT_KEY_FD`.
static HANDED_OVER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Takes `TRIGGERD_ROOT_KEY` out of the server's environment. `/proc/<pid>/environ` shows the
/// environment a process was started with, whatever it later removes, so the server starts
/// itself again (`exec`, same pid) without the variable, handing the key over through a pipe
/// named by `TRIGGERD_ROOT_KEY_FD`; the new image reads it and closes it. If the binary cannot
/// be started again, the server goes on with the key in its environment, and says so.
fn root_key_out_of_environment() {
    use std::io::{Read as _, Write as _};
    use std::os::fd::AsRawFd as _;
    use std::os::unix::process::CommandExt as _;

    if let Some(fd) = std::env::var_os("TRIGGERD_ROOT_KEY_FD") {
        std::env::remove_var("TRIGGERD_ROOT_KEY_FD");
        let fd = fd.to_string_lossy();
        // The inherited pipe, opened by name (adopting a raw descriptor would need unsafe
        // code). Read to its end, it holds nothing more: the inherited descriptor that stays
        // open is an empty pipe whose writer is gone.
        let mut key = String::new();
        match std::fs::File::open(format!("/proc/self/fd/{fd}"))
            .and_then(|mut pipe| pipe.read_to_string(&mut key))
        {
            Ok(_) => {
                let _ = HANDED_OVER.set(key);
            }
            Err(e) => {
                // Going on without it would make a fresh database print a generated key
                // instead of the operator's.
                eprintln!("triggerd: could not read TRIGGERD_ROOT_KEY as handed over: {e}");
                std::process::exit(Exit::Usage as i32);
            }
        }
        return;
    }
    let Some(key) = std::env::var_os("TRIGGERD_ROOT_KEY").filter(|k| !k.is_empty()) else {
        return;
    };
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let handed = rustix::pipe::pipe()
        .map_err(std::io::Error::from)
        .and_then(|(read, write)| {
            let mut write = std::fs::File::from(write);
            write.write_all(key.as_encoded_bytes())?;
            drop(write);
            Ok(read)
        });
    let read = match handed {
        Ok(read) => read,
        Err(e) => {
            eprintln!("triggerd: TRIGGERD_ROOT_KEY stays in the environment (no pipe: {e})");
            return;
        }
    };
    let e = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env_remove("TRIGGERD_ROOT_KEY")
        .env("TRIGGERD_ROOT_KEY_FD", read.as_raw_fd().to_string())
        .exec();
    eprintln!(
        "triggerd: TRIGGERD_ROOT_KEY stays in the environment (restarting without it failed: {e})"
    );
}

/// `triggerd serve`.
pub fn serve(
    config: Option<PathBuf>,
    demo: bool,
    listen: Option<String>,
    db: DatabaseArgs,
    public_url: Option<String>,
) -> CliResult {
    root_key_out_of_environment();
    let mut settings = settings(
        config,
        Overrides {
            listen,
            database_url: db.database_url,
            public_url,
        },
    )?;
    // Run steps run under supervisors that this same binary's `step-spawner` forks.
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
    crate::memory::spawn_trimmer();
    run_on(serve_runtime(settings.engine_nice), async move {
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
