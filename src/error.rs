//! The CLI's one error type, and the one place where outcomes become exit codes.
//!
//! Every command returns [`Outcome`]. The exit codes are a contract (README, "Exit codes";
//! book/src/cli-reference.md) and hold for every command: the same failure gets the same
//! code everywhere, because only [`Outcome::exit_code`] maps them.

use std::fmt;
use std::process::ExitCode;

/// What a command did, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// It did what was asked (or found nothing to do): 0.
    Ok,
    /// `--detailed-exitcode` and there are changes, as `terraform plan -detailed-exitcode`: 2.
    Changes,
}

/// Why a command failed. The message variants are printed once, as `error: MESSAGE`, by
/// [`report`]; [`Error::Reported`] was already printed in full (diagnostics, findings, a
/// list of refused changes) and only carries its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The command line, or a path it names, cannot be used (a file that cannot be read or
    /// written, a directory without specs, flags that cannot go together): 2.
    Usage(String),
    /// The cluster cannot be reached, refuses the credentials, or does not serve what the
    /// command needs (no KubeVirt, no local runtime): 1.
    Cluster(String),
    /// What was asked was refused or did not happen: the cluster's refusal, a rule's
    /// (`prevent-destroy`, a guard), a VM that is missing or not running, a wait that ended
    /// without success, a cancelled prompt: 1.
    Failed(String),
    /// Already said in full; the kind decides the code.
    Reported(Kind),
}

/// The kind of an already reported failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Errors in the specs, policy findings, files to format, or a refusal: 1.
    Failed,
    /// The paths given (the compiler's input errors) or the command line: 2.
    Usage,
}

pub type Outcome = Result<Done, Error>;

/// 0: success. 1: errors in the specs, findings, or a failed or refused operation,
/// the cluster's included. 2: usage (and, with `--detailed-exitcode`, changes present).
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Reported(Kind::Usage) => EXIT_USAGE,
            Error::Cluster(_) | Error::Failed(_) | Error::Reported(Kind::Failed) => EXIT_FAILED,
        }
    }

    /// Shorthand for the common case: a refusal or failure, in words.
    pub fn failed(message: impl fmt::Display) -> Error {
        Error::Failed(message.to_string())
    }

    pub fn usage(message: impl fmt::Display) -> Error {
        Error::Usage(message.to_string())
    }

    pub fn cluster(message: impl fmt::Display) -> Error {
        Error::Cluster(message.to_string())
    }

    /// Already reported errors in the specs or findings.
    pub const FAILED: Error = Error::Reported(Kind::Failed);
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Cluster(m) | Error::Failed(m) => f.write_str(m),
            Error::Reported(_) => f.write_str("(reported above)"),
        }
    }
}

impl std::error::Error for Error {}

/// Print what is left to say of an outcome, and turn it into the process's exit code.
pub fn report(outcome: Outcome) -> ExitCode {
    let code = match outcome {
        Ok(Done::Ok) => EXIT_OK,
        Ok(Done::Changes) => EXIT_USAGE,
        Err(e) => {
            if !matches!(e, Error::Reported(_)) {
                eprintln!("error: {e}");
            }
            e.exit_code()
        }
    };
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table, kept here: one failure, one code, in every command.
    #[test]
    fn each_failure_has_one_exit_code() {
        assert_eq!(Error::usage("x").exit_code(), 2);
        assert_eq!(Error::Reported(Kind::Usage).exit_code(), 2);
        assert_eq!(Error::cluster("unreachable").exit_code(), 1);
        assert_eq!(Error::failed("refused").exit_code(), 1);
        assert_eq!(Error::FAILED.exit_code(), 1);
        assert_eq!(report(Ok(Done::Ok)), ExitCode::from(0));
        assert_eq!(report(Ok(Done::Changes)), ExitCode::from(2));
    }
}
