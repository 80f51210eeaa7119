use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = latus::cli::Cli::parse();
    // A command whose output goes to a pipe closed early (`latus status |
    // head`) ends quietly, as other tools do. Not the daemon (`mount`): it
    // writes to sockets whose peers may go, and must live on.
    if !matches!(cli.command, latus::cli::Cmd::Mount { .. }) {
        // SAFETY: restoring the default action of a signal, before any
        // thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match latus::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latus: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
