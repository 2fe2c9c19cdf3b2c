//! `berth`, the command line for users and admins. It talks to the
//! coordinator's REST API (`/v1`); see `berth --help` and docs/cli.md.
//! Errors print `berth: CODE: message` (the API's stable codes) and exit 1;
//! bad usage exits 2.
#![forbid(unsafe_code)]

mod args;
mod client;
mod commands;
mod config;
mod output;

use clap::Parser;
use std::io::Write;

/// Why a command failed: its stable code, a message, the exit status.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: String,
    pub message: String,
    pub status: i32,
}

impl From<client::Error> for Failure {
    fn from(e: client::Error) -> Self {
        Self {
            code: e.code,
            message: e.message,
            status: 1,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self {
            code: "cli_error".into(),
            message: format!("{e:#}"),
            status: 1,
        }
    }
}

/// A failure with `code` (`usage` exits 2, everything else 1).
pub(crate) fn fail(code: &str, message: impl Into<String>) -> Failure {
    Failure {
        code: code.into(),
        message: message.into(),
        status: if code == "usage" { 2 } else { 1 },
    }
}

/// What a command ends with: its exit status, or why it failed.
pub(crate) type Outcome = Result<i32, Failure>;

fn main() {
    let cli = args::Cli::parse();
    let json = cli.json;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(f) => {
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({"code": f.code, "message": f.message})
                );
            } else {
                eprintln!("berth: {}: {}", f.code, f.message);
            }
            f.status
        }
    };
    // Flush before exiting: process::exit skips destructors.
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
