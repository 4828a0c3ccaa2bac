//! The `triggerd` command line: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use triggerd::config::{Overrides, Settings};
use triggerd::startup::{shutdown_signal, Application};
use triggerd::{bootstrap, store, telemetry};

#[derive(Parser)]
#[command(
    name = "triggerd",
    version,
    about = "Starts pipelines from webhooks (Harness custom-trigger compatible)"
)]
struct Cli {
    /// Configuration file (default: ./triggerd.toml when present).
    #[arg(long, global = true, env = "TRIGGERD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Seed a demo account, project, pipeline and trigger, and print a ready curl.
        #[arg(long)]
        demo: bool,
        /// Address to listen on (overrides `listen`).
        #[arg(long)]
        listen: Option<String>,
        /// Database URL, sqlite://PATH or postgres://... (overrides `database_url`).
        #[arg(long)]
        database_url: Option<String>,
        /// Base URL for generated links (overrides `public_url`).
        #[arg(long)]
        public_url: Option<String>,
    },
    /// Create the database and print the root key (once).
    Init,
    /// Apply pending database migrations.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = match &cli.command {
        Command::Serve {
            listen,
            database_url,
            public_url,
            ..
        } => Overrides {
            listen: listen.clone(),
            database_url: database_url.clone(),
            public_url: public_url.clone(),
        },
        _ => Overrides::default(),
    };
    let settings = match Settings::load(cli.config.as_deref(), &overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("triggerd: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("triggerd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triggerd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    let root_key = std::env::var("TRIGGERD_ROOT_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    match command {
        Command::Migrate => {
            println!("{}", store::migrate(&settings).await?);
            Ok(())
        }
        Command::Init => {
            let settings = Settings {
                listen: "127.0.0.1:0".into(),
                ..settings
            };
            let app = Application::build(&settings).await?;
            let gateway = app.gateway();
            match bootstrap::ensure_root_key(&gateway, root_key.as_deref()).await? {
                Some(key) => print_root_key(&key),
                None => println!("The database already has a root key; nothing to do."),
            }
            app.run_until_stopped(async {}).await
        }
        Command::Serve { demo, .. } => {
            // Run steps are children running as the same user: without this they could read
            // this process's memory and /proc/<pid>/environ (which may hold TRIGGERD_ROOT_KEY).
            if let Err(e) = rustix::process::set_dumpable_behavior(
                rustix::process::DumpableBehavior::NotDumpable,
            ) {
                tracing::warn!(error = %e, "could not make the process non-dumpable");
            }
            let mut settings = settings;
            if demo {
                // The demo's event rule delivers to a receiver on this machine.
                let loopback = "127.0.0.0/8".to_owned();
                if !settings.outbound.allowed_cidrs.contains(&loopback) {
                    settings.outbound.allowed_cidrs.push(loopback);
                }
            }
            let app = Application::build(&settings).await?;
            let gateway = app.gateway();
            match bootstrap::ensure_root_key(&gateway, root_key.as_deref()).await? {
                Some(key) => print_root_key(&key),
                None if root_key.is_none() => println!(
                    "{} already has a root key; it was printed once, when the database was created. \
                     Use that key, or start on a new database (--database-url) to get a new one.",
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
        }
    }
}

fn print_root_key(key: &triggerd::domain::ids::ApiKey) {
    println!();
    println!("Root API key (shown once; store it safely, it manages every account):");
    println!();
    println!("  {}", key.expose_secret());
    println!();
}
