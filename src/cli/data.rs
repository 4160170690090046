//! `fer data stats`: counts, imbalance, quality and digest of the data set.

use super::DataArgs;
use crate::data;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Counts per split and class, imbalance, blank and duplicate images, digest.
    Stats(StatsArgs),
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Where to write the class-distribution chart (default:
    /// runs/data/class_distribution.png, refreshed each time).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Overwrite an existing --plot file.
    #[arg(long)]
    pub replace: bool,
    /// Write a data config (YAML) for this data set: its folder, classes in
    /// label order and its training split's pixel mean and std. Never
    /// overwrites a file.
    #[arg(long, value_name = "FILE")]
    pub write_config: Option<PathBuf>,
}

pub fn stats(args: StatsArgs) -> Result<ExitCode> {
    if let Some(p) = &args.plot {
        crate::layout::check_out_file(p, &[], "--plot", args.replace)?;
    }
    if let Some(p) = &args.write_config {
        crate::layout::check_out_file(p, &[], "--write-config", false)?;
    }
    let cfg = args.data.resolve()?;
    let loaded = data::load(&cfg, &crate::layout::cache_dir())?;
    let stats = data::stats::compute(&cfg, &loaded.data, loaded.seconds, loaded.from_cache);
    let plot = args.plot.unwrap_or_else(crate::layout::class_chart);
    stats.plot(&plot)?;
    if let Some(p) = &args.write_config {
        crate::layout::write_atomic(p, stats.data_config(&cfg).as_bytes())?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{}", stats.render());
        println!("chart:      {}", plot.display());
        if let Some(p) = &args.write_config {
            println!("config:     {}", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(cmd: DataCommand) -> Result<ExitCode> {
    match cmd {
        DataCommand::Stats(a) => stats(a),
    }
}
