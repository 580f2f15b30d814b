//! Parse, dispatch, map errors to exit codes.

use std::process::ExitCode;

use bbr_agent::cli::Cli;

fn main() -> ExitCode {
    // First, before even the command line is read (a flag this version does not know ends the
    // process in `parse`): a brought agent leaves no file behind, whatever happens next.
    bbr_agent::brought::remove_own_binary();
    let cli = Cli::parse_args();
    if let Err(e) = bbr_agent::interrupt::install_signal_handlers() {
        eprintln!("error: cannot install signal handlers: {e}");
        return ExitCode::from(1);
    }
    let code = match bbr_agent::app::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    };
    // Interrupted by a signal: the cleanup has run; say so in the exit status, as shells do.
    let code = bbr_agent::interrupt::exit_status(code);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
