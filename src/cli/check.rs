//! `pipeline check [--until STAGE] [--json]`: the checks `run` makes before
//! it submits to Slurm (`engine::check`), on their own, one line per check.

use anyhow::Result;

use pipeline::engine::check;
use pipeline::engine::run::selection;
use pipeline::engine::workspace::Workspace;

use super::{load_dag, Cli};

/// Arguments of `pipeline check`.
#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// Check what `run --until STAGE` would run (default: every stage).
    #[arg(long)]
    until: Option<String>,
    /// One JSON object: `passed` and every finding (stage, area, level, text).
    #[arg(long)]
    json: bool,
}

/// Runs the checks: 0 when none failed, 1 otherwise.
pub(crate) async fn check_cmd(cli: &Cli, a: &CheckArgs) -> Result<i32> {
    let dag = load_dag(cli)?;
    let ws = Workspace::open(&cli.workspace).await?;
    let sel = selection(&dag, a.until.as_deref(), &[])?;
    let report = check::check(&ws, &dag, &cli.profile, &sel, &Default::default()).await?;
    let passed = report.passed();
    if a.json {
        let doc = serde_json::json!({"passed": passed, "findings": report.findings});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for f in &report.findings {
            println!("{f}");
        }
        let failed = report.failures().count();
        if passed {
            println!("check passed ({} checks)", report.findings.len());
        } else {
            println!(
                "check failed: {failed} of {} checks; fix them before `pipeline run`",
                report.findings.len()
            );
        }
    }
    Ok(if passed { 0 } else { 1 })
}
