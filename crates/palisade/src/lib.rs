//! The `palisade` binary's library half: the operator CLI commands, the HTTPS API
//! client, output formatting and `serve`. `main.rs` only parses argv and maps
//! results to exit codes.

pub mod client;
pub mod commands;
pub mod demo;
pub mod factory;
pub mod keys;
pub mod monitoring;
pub mod network;
pub mod output;
pub mod posture;
pub mod rollout;
pub mod serve;
pub mod sim;

use std::path::PathBuf;

use clap::Args;

/// Options every command understands.
#[derive(Debug, Args, Default)]
pub struct Global {
    /// Data directory: the server's state; the CLI finds the server URL, root CA and
    /// admin token there when the options below are not given.
    #[arg(long, global = true, env = "PALISADE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Server URL [default: from DATA_DIR/url, else https://127.0.0.1:8443].
    #[arg(long, global = true, env = "PALISADE_URL")]
    pub url: Option<String>,
    /// Root CA certificate that authenticates the server [default: DATA_DIR/ca/root.pem].
    #[arg(long, global = true, env = "PALISADE_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// API token [default: the contents of DATA_DIR/admin-token].
    #[arg(long, global = true, env = "PALISADE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print data as JSON (on stdout) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}
