//! `berth`: the command-line client of berth's HTTP API, and the entry point of the platform
//! itself (`berth up`). Thin by design: every command parses its arguments, calls the API (or
//! a plane's library for `up`, `edge` and the in-container helpers) and prints the result.
#![forbid(unsafe_code)]

/// mimalloc for every allocation of the platform's processes: the edge allocates a little
/// for each request (headers, buffers), and glibc's allocator was ~8% of its CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod app_state;
mod backups;
mod cli;
mod client;
mod commands;
mod declarative;
mod domains;
mod drill;
mod git;
mod install;
mod login;
mod ops;
mod output;
mod platform_config;
mod render;
mod slo;
mod teams;

use clap::Parser;

/// Output cut short by its reader (`berth status | head -3`) ends berth quietly, as it
/// ends other Unix tools: exit status 141 (SIGPIPE's), no panic message.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        // `println!`'s "failed printing to stdout: Broken pipe", or a generator's
        // `expect` on the same write.
        if message.contains("Broken pipe") || message.contains("BrokenPipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() {
    quiet_on_closed_stdout();
    let mut cli = cli::Cli::parse();
    if let cli::Command::Up(args) = &cli.command {
        // The config file's settings go in before anything else runs.
        let data_dir = client::data_dir(&cli.global);
        if let Some(path) = platform_config::path(args.config.as_deref(), &data_dir) {
            match platform_config::load(&path) {
                Ok(settings) => {
                    platform_config::apply(&settings);
                    cli = platform_config::reparse();
                }
                Err(problems) => {
                    eprintln!(
                        "error: the config file {} has {} problem(s); nothing was started:\n  {}\nhint: its keys are berth up's flags without the dashes in front (api-port = 7070); see berth up --help",
                        path.display(),
                        problems.len(),
                        problems.join("\n  ")
                    );
                    std::process::exit(1);
                }
            }
        }
    }
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            output::print_error(&e);
            1
        }
    };
    std::process::exit(code);
}
