use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = latus::cli::Cli::parse();
    match latus::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latus: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
