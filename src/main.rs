//! The `triggerd` binary: the command line lives in [`triggerd::cli`].

fn main() -> std::process::ExitCode {
    triggerd::cli::main()
}
