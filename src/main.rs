use std::process::ExitCode;

use clap::Parser as _;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = granulo::cli::Cli::parse();
    granulo::telemetry::init(&cli.global.log, cli.global.log_format);
    granulo::cli::run(cli)
}
