//! The `toolgate` command: parses what the user wrote (clap), hands it to
//! the library that builds and runs it (toolgate-host for the gateways),
//! and prints. Nothing here decides anything; see ARCHITECTURE.md for the map.

mod approvals_cmd;
mod audit_cmd;
mod cli;
mod config;
mod demo;
mod flags;
mod grant;
mod pins_cmd;
mod scan;
mod serve;
mod table;
mod ui;

use clap::Parser;

// The gateway allocates small, short-lived buffers for every message; mimalloc
// serves those several times faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    match cli::dispatch(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("toolgate: {e:#}");
            ExitCode::from(1)
        }
    }
}
