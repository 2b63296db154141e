//! What a running toolgate is wired from: the parts every command that
//! starts a gateway (`toolgate run`, `serve`, `ui`) opens around it, each
//! written once. The binary parses what the user wrote into the plain
//! `*Flags` structs here (the admin and OTLP ones are clap argument groups
//! it takes in as they are); this crate builds the real objects from them
//! (validated, with the config file and the environment) and runs them.
//!
//! - [`stores`]: the counter, approval, pin and session stores of a state config.
//! - [`audit`]: the audit sink, retention, opening an existing trail.
//! - [`admin`]: the admin API's options from flags and config; its listener.
//! - [`telemetry`]: OTLP settings, the observer, what `GET /metrics` renders.
//! - [`console`]: the dashboard's hosts for `serve`, `run` and `ui`.
//! - [`host`]: what `run` and `serve` both open before their gateway.
//! - [`watch`]: the one file watcher behind every hot reload of `serve`.
//! - [`shutdown`]: SIGINT and SIGTERM as a future.
//! - [`upstreams`]: reaching MCP servers as a client, listing their tools.
//! - [`policy`]: reading a policy file.
//! - [`run`], [`serve`], [`ui`]: the three long-running commands.
//!
//! **Invariants:** nothing here decides a call (the gateways do); nothing
//! is read from the environment but through the functions that say so;
//! no printing to stdout (stdout belongs to `run`'s client and to the
//! binary's output), only start-up lines and errors on stderr.

pub mod admin;
pub mod audit;
pub mod console;
pub mod host;
pub mod policy;
pub mod run;
pub mod serve;
pub mod shutdown;
pub mod stores;
pub mod telemetry;
pub mod ui;
pub mod upstreams;
pub mod watch;

/// A variable of the process environment (`None` when unset or not
/// Unicode): what the functions that read the environment are given,
/// outside tests.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
