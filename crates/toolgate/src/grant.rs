//! `toolgate grant`: make a grant's token and the config lines that hold
//! its hash (`grant new`), or hash an existing token (`grant hash`).

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::io::Read as _;

#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Make a fresh token for a new grant: prints the token (once) and the config lines to paste.
    New {
        /// The grant's name (letters, digits, _ and -; at most 64).
        name: String,
    },
    /// Read a token on stdin and print its SHA-256 (the config's token_sha256).
    Hash,
}

pub fn run(command: GrantCommand) -> Result<u8> {
    match command {
        GrantCommand::New { name } => {
            let valid = (1..=64).contains(&name.chars().count())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                bail!("invalid grant name {name:?} (1 to 64 letters, digits, _ or -)");
            }
            let token = toolgate_config::new_token();
            let hash = hex::encode(toolgate_config::hash_token(&token));
            println!("{token}");
            eprintln!(
                "toolgate: the token above is shown once; give it to the agent and keep it secret"
            );
            eprintln!("toolgate: add this to the config:");
            println!();
            println!("grants:\n  {name}:\n    token_sha256: \"{hash}\"");
            Ok(0)
        }
        GrantCommand::Hash => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("cannot read the token from stdin")?;
            let token = input.trim_end_matches(['\n', '\r']);
            if token.is_empty() {
                bail!("no token on stdin");
            }
            println!("{}", hex::encode(toolgate_config::hash_token(token)));
            Ok(0)
        }
    }
}
