//! `berth`: the command-line client of berth's HTTP API, and the entry point of the platform
//! itself (`berth up`). Thin by design: every command parses its arguments, calls the API (or
//! a plane's library for `up`, `edge` and the in-container helpers) and prints the result.
#![forbid(unsafe_code)]

mod app_state;
mod backups;
mod cli;
mod client;
mod commands;
mod domains;
mod drill;
mod login;
mod ops;
mod output;
mod slo;
mod teams;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            output::print_error(&e);
            1
        }
    };
    std::process::exit(code);
}
