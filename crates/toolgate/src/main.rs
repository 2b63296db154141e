//! The `toolgate` command: parses arguments and wires the crates together.
//! Nothing here decides anything; see ARCHITECTURE.md for the map.

mod admin_args;
mod approvals_cmd;
mod audit_cmd;
mod cli;
mod config;
mod console;
mod demo;
mod grant;
mod pins_cmd;
mod scan;
mod serve;
mod state;
mod telemetry_args;

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
