//! The `triggerd` command line (DESIGN §13): the server commands (`serve`, `init`, `migrate`,
//! `admin`) and the client commands that drive a server over its REST API.
//!
//! Exit codes: 0 success, 1 the execution failed or the request was refused, 2 no trigger
//! matched, 3 usage or connection error.

pub mod api;
pub mod apply;
pub mod client;
pub mod output;
pub mod profile;
pub mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory as _, Parser, Subcommand};

use output::Format;

/// Exit codes of DESIGN §13.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0.
    Success = 0,
    /// 1: the execution failed, or the server refused the request.
    Failed = 1,
    /// 2: no trigger matched.
    NoMatch = 2,
    /// 3: bad usage, a malformed file, or the server cannot be reached.
    Usage = 3,
}

/// The client's one error type: a one-line message and the exit code it leads to.
#[derive(Debug)]
pub struct CliError {
    /// Exit code.
    pub exit: Exit,
    /// What to print after `triggerd: `.
    pub message: String,
}

impl CliError {
    /// Exit 3: usage, input or connection.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Usage,
            message: message.into(),
        }
    }

    /// Exit 1: the server refused, or the execution failed.
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Failed,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        Self::refused(format!("{e:#}"))
    }
}

/// What a command ends with when it did not fail outright.
pub type CliResult = Result<Exit, CliError>;

#[derive(Parser)]
#[command(
    name = "triggerd",
    version,
    about = "Starts pipelines from webhooks (Harness custom-trigger compatible)",
    after_help = "Start here:\n  triggerd serve --demo                      run a gateway with a demo project\n  triggerd login --url http://127.0.0.1:8080  store the server and key (key read from stdin)\n  triggerd apply -f examples/                 create pipelines, triggers and rules\n  triggerd fire hello/hello_trigger --project demo/default/demo --wait"
)]
struct Cli {
    /// Server configuration file (default: ./triggerd.toml when present).
    #[arg(long, global = true, env = "TRIGGERD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Client profile to use (default: the one `login` or `use` last chose).
    #[arg(long, global = true, env = "TRIGGERD_PROFILE", value_name = "NAME")]
    profile: Option<String>,
    /// Project to act in (default: the profile's, set with `triggerd use`).
    #[arg(
        long,
        global = true,
        env = "TRIGGERD_PROJECT",
        value_name = "ACCOUNT/ORG/PROJECT"
    )]
    project: Option<String>,
    /// Output format of client commands.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

/// The database flags shared by the server commands.
#[derive(Args, Clone, Default)]
pub struct DatabaseArgs {
    /// Database URL, sqlite://PATH or postgres://... (overrides `database_url`).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Internal: forks the supervisors of Run steps (the engine starts it, once).
    #[command(
        name = "step-spawner",
        hide = true,
        after_help = "Example (the engine runs this, not people):\n  triggerd step-spawner --parent 4242 --keep 32"
    )]
    StepSpawner {
        /// The pid of the triggerd that started it; if that is gone, it exits.
        #[arg(long)]
        parent: u32,
        /// How many supervisors may wait for the next step.
        #[arg(long, default_value_t = 32)]
        keep: usize,
    },
    /// Run the gateway.
    #[command(after_help = "Example:\n  triggerd serve --demo --listen 127.0.0.1:8080")]
    Serve {
        /// Seed a demo account, project, pipeline and trigger, and print a ready curl.
        #[arg(long)]
        demo: bool,
        /// Address to listen on (overrides `listen`).
        #[arg(long)]
        listen: Option<String>,
        #[command(flatten)]
        db: DatabaseArgs,
        /// Base URL for generated links (overrides `public_url`).
        #[arg(long)]
        public_url: Option<String>,
    },
    /// Create and migrate the database and print the root key once; starts no server.
    #[command(after_help = "Example:\n  triggerd init --database-url sqlite://triggerd.db")]
    Init {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Apply pending database migrations.
    #[command(
        after_help = "Example:\n  triggerd migrate --database-url postgres://triggerd@db/triggerd"
    )]
    Migrate {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Offline administration on the database.
    #[command(
        subcommand,
        after_help = "Example:\n  triggerd admin reset-root-key --database-url sqlite://triggerd.db"
    )]
    Admin(server::AdminCommand),
    /// Store a server URL and API key in a profile (the key is read from a prompt or stdin).
    #[command(
        after_help = "Examples:\n  triggerd login --url http://127.0.0.1:8080\n  echo \"$KEY\" | triggerd login --url https://triggerd.example.com --profile prod"
    )]
    Login(client::LoginArgs),
    /// Show the server, key and project in use.
    #[command(after_help = "Example:\n  triggerd whoami")]
    Whoami,
    /// Set the profile's default project.
    #[command(after_help = "Example:\n  triggerd use acme/default/payments")]
    Use {
        /// `ACCOUNT/ORG/PROJECT`.
        #[arg(value_name = "ACCOUNT/ORG/PROJECT")]
        project: String,
    },
    /// Create or update pipelines, triggers, event rules and settings from YAML documents.
    #[command(
        after_help = "Examples:\n  triggerd apply -f examples/\n  triggerd apply -f pipeline.yaml --dry-run\n  cat docs.yaml | triggerd apply -f -\n  triggerd apply -f config/ --prune --yes"
    )]
    Apply(apply::ApplyArgs),
    /// Write a project's pipelines, triggers, event rules and settings as apply-able files.
    #[command(
        after_help = "Example:\n  triggerd export --project acme/default/payments --dir config/"
    )]
    Export(apply::ExportArgs),
    /// List or show resources.
    #[command(
        after_help = "Examples:\n  triggerd get projects\n  triggerd get executions --status failed\n  triggerd get triggers --pipeline deploy -o json\n  triggerd get events --trigger on_push --limit 20"
    )]
    Get(client::GetArgs),
    /// Fire a trigger with a payload, as its webhook sender would.
    #[command(
        after_help = "Examples:\n  triggerd fire deploy/on_push --data @payload.json --wait\n  triggerd fire deploy/on_push --data '{\"ref\":\"refs/heads/main\"}' --dry-run\n  git log -1 --format='{\"sha\":\"%H\"}' | triggerd fire deploy/on_push --data -\n\nExit codes: 0 success, 1 the execution failed or the request was refused,\n2 no trigger matched, 3 usage or connection error."
    )]
    Fire(client::FireArgs),
    /// Show what became of a webhook event.
    #[command(after_help = "Example:\n  triggerd status 632394c7b018985c661747be --wait")]
    Status(client::StatusArgs),
    /// Print an execution's step logs.
    #[command(
        after_help = "Examples:\n  triggerd logs _iodHvEhT2y_Mn_DLaR32A\n  triggerd logs _iodHvEhT2y_Mn_DLaR32A build/compile -f"
    )]
    Logs(client::LogsArgs),
    /// Approve an execution waiting for approval.
    #[command(
        after_help = "Example:\n  triggerd approve _iodHvEhT2y_Mn_DLaR32A --comment 'ship it'"
    )]
    Approve(client::ControlArgs),
    /// Reject an execution waiting for approval.
    #[command(
        after_help = "Example:\n  triggerd reject _iodHvEhT2y_Mn_DLaR32A --comment 'not today'"
    )]
    Reject(client::ControlArgs),
    /// Abort an execution.
    #[command(after_help = "Example:\n  triggerd abort _iodHvEhT2y_Mn_DLaR32A")]
    Abort(client::ControlArgs),
    /// Pause an execution before its next step.
    #[command(after_help = "Example:\n  triggerd pause _iodHvEhT2y_Mn_DLaR32A")]
    Pause(client::ControlArgs),
    /// Resume a paused execution.
    #[command(after_help = "Example:\n  triggerd resume _iodHvEhT2y_Mn_DLaR32A")]
    Resume(client::ControlArgs),
    /// Create, list and revoke API keys.
    #[command(
        subcommand,
        after_help = "Examples:\n  triggerd keys create ci --role executor --projects default/payments\n  triggerd keys list\n  triggerd keys revoke 5f0c3e1a9b7d4c2e8f6a1b3c"
    )]
    Keys(client::KeysCommand),
    /// Test event rules, rotate their secret, redeliver and recover deliveries.
    #[command(
        subcommand,
        after_help = "Examples:\n  triggerd rules test ops --event-type pipeline_end\n  triggerd rules recover ops --since 2026-11-30T00:00:00Z"
    )]
    Rules(client::RulesCommand),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  triggerd completions bash > ~/.local/share/bash-completion/completions/triggerd\n  triggerd completions zsh > \"${fpath[1]}/_triggerd\"\n  triggerd completions fish > ~/.config/fish/completions/triggerd.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Parses the arguments, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let exit = match run(cli) {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("triggerd: {}", e.message);
            e.exit
        }
    };
    ExitCode::from(exit as u8)
}

fn run(cli: Cli) -> CliResult {
    let ctx = client::Context {
        profile: cli.profile,
        project: cli.project,
        output: cli.output,
    };
    let config = cli.config;
    match cli.command {
        Command::StepSpawner { parent, keep } => crate::engine::spawner::run(parent, keep),
        Command::Serve {
            demo,
            listen,
            db,
            public_url,
        } => server::serve(config, demo, listen, db, public_url),
        Command::Init { db } => server::init(config, db),
        Command::Migrate { db } => server::migrate(config, db),
        Command::Admin(cmd) => server::admin(config, cmd),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "triggerd",
                &mut std::io::stdout(),
            );
            Ok(Exit::Success)
        }
        Command::Login(args) => client::login(&ctx, args),
        Command::Whoami => client::block_on(client::whoami(&ctx)),
        Command::Use { project } => client::use_project(&ctx, &project),
        Command::Apply(args) => client::block_on(apply::apply(&ctx, args)),
        Command::Export(args) => client::block_on(apply::export(&ctx, args)),
        Command::Get(args) => client::block_on(client::get(&ctx, args)),
        Command::Fire(args) => client::block_on(client::fire(&ctx, args)),
        Command::Status(args) => client::block_on(client::status(&ctx, args)),
        Command::Logs(args) => client::block_on(client::logs(&ctx, args)),
        Command::Approve(args) => client::block_on(client::control(&ctx, "approve", args)),
        Command::Reject(args) => client::block_on(client::control(&ctx, "reject", args)),
        Command::Abort(args) => client::block_on(client::control(&ctx, "abort", args)),
        Command::Pause(args) => client::block_on(client::control(&ctx, "pause", args)),
        Command::Resume(args) => client::block_on(client::control(&ctx, "resume", args)),
        Command::Keys(cmd) => client::block_on(client::keys(&ctx, cmd)),
        Command::Rules(cmd) => client::block_on(client::rules(&ctx, cmd)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn an_execution_id_that_begins_with_a_dash_is_an_id_not_a_flag() {
        for command in ["approve", "logs"] {
            let cli = Cli::try_parse_from(["triggerd", command, "-R2x_y"]);
            assert!(
                cli.is_ok(),
                "{command}: {:?}",
                cli.err().map(|e| e.to_string())
            );
        }
    }

    #[test]
    fn every_command_has_an_example_in_its_help() {
        fn check(cmd: &clap::Command, path: &str) {
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                let help = sub
                    .get_after_help()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                assert!(
                    help.contains("triggerd "),
                    "{name} has no example in its --help"
                );
                check(sub, &name);
            }
        }
        check(&Cli::command(), "triggerd");
    }
}
