use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = granulo::cli::Cli::parse();
    granulo::telemetry::init(&cli.global.log, cli.global.log_format);
    granulo::cli::run(cli)
}
