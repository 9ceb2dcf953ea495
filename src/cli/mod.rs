//! The command line: clap definitions, human and JSON output, exit codes.
//! Exit status: 0 success, 1 failure (a failed step, a changed artifact, an
//! error), 2 bad usage, 128 + the signal when a signal stopped a run (130
//! Ctrl-C, 143 SIGTERM, 129 SIGHUP).

mod bench;
mod check;
mod detect;
mod report;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use pipeline::engine::dag::Dag;
use pipeline::engine::run::{self, RunOptions};
use pipeline::engine::workspace::Workspace;
use pipeline::engine::{compare, export, lineage, pipeline as def, status};
use pipeline::exec::slurm::ClusterConfig;
use pipeline::store::StepId;

#[derive(Parser)]
#[command(
    name = "pipeline",
    version,
    about = "Reproduces the AVDFD research pipeline end to end, recording the lineage of every artifact"
)]
struct Cli {
    /// The pipeline file.
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        default_value = "pipeline/avdfd.yaml"
    )]
    file: PathBuf,
    /// The workspace: every data path is relative to it; the store lives in DIR/.pipeline.
    #[arg(short = 'w', long = "workspace", global = true, default_value = ".")]
    workspace: PathBuf,
    /// The parameter profile (a folder of config/: demo, paper, ...).
    #[arg(long, global = true, env = "PIPELINE_PROFILE", default_value = "demo")]
    profile: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the stale stages (all of them, or what --until/--only select).
    Run(RunArgs),
    /// Check, in seconds, what would make the stages a run would run fail
    /// late: missing inputs and files, unreadable videos, a split part with
    /// one class, an element set's missing shards (exit 1 if any).
    Check(check::CheckArgs),
    /// Show each stage as up to date or stale, and why.
    Status {
        /// Print the stages as JSON (state, reasons, running and last step).
        #[arg(long)]
        json: bool,
    },
    /// The fake probability of video files under the newest stage-2 model:
    /// per file the fused score, the audio-only and A2V-only scores and the
    /// fusion weights, or why it could not be read (exit 1 if none scored).
    Detect(detect::DetectArgs),
    /// Print the stage graph.
    Dag {
        /// text (each stage with what it needs), dot (Graphviz) or mermaid.
        #[arg(long, value_enum, default_value = "text")]
        format: DagFormat,
    },
    /// What produced an artifact: step, params, code, host, times, inputs
    /// (recursively); `lineage export` writes the whole record for other tools.
    #[command(args_conflicts_with_subcommands = true)]
    Lineage {
        #[command(subcommand)]
        export: Option<LineageCmd>,
        /// A recorded artifact, or a file inside a recorded folder.
        path: Option<String>,
        /// What was made from the artifact instead.
        #[arg(long)]
        downstream: bool,
        /// Print the tree as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare the metrics of two recorded steps (each metrics.json among their outputs).
    Metrics {
        #[command(subcommand)]
        cmd: DiffCmd,
    },
    /// Compare the resolved parameters of two recorded steps.
    Params {
        #[command(subcommand)]
        cmd: DiffCmd,
    },
    /// Put back the version of an artifact that a recorded step wrote (or
    /// read), when its bytes are still in the workspace; the version it
    /// replaces is set aside in .pipeline/checkout.
    Checkout {
        /// The artifact (workspace-relative).
        path: String,
        /// The recorded step whose version to restore (`pipeline lineage PATH`
        /// and `pipeline status --json` show step ids).
        #[arg(long)]
        step: i64,
    },
    /// Where the report page is and whether it is up to date (`pipeline run
    /// --until report` makes it); --markdown prints it.
    Report {
        /// The report stage (default: the pipeline's stage of kind report).
        #[arg(long)]
        stage: Option<String>,
        /// Print the report as Markdown on standard output.
        #[arg(long)]
        markdown: bool,
    },
    /// Re-hash every recorded artifact and list those that changed (exit 1 if any).
    Verify {
        /// Print the count and the changed artifacts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the log of a stage's newest step (or of --step ID).
    Log {
        /// The stage whose log to print.
        stage: String,
        /// A recorded step's id instead of the stage's newest step.
        #[arg(long)]
        step: Option<i64>,
    },
    /// Clear the workspace lock left by a process on another host.
    Unlock,
    /// Rebuild a lost, emptied or damaged store from the step folders.
    Recover,
    /// Remove staging folders, superseded step folders and recorded stages'
    /// memos: what no recorded artifact, live step or resume needs.
    Gc {
        /// List them with their sizes; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print benchmark numbers.
    Bench(bench::BenchArgs),
    /// Convert a voice as Seed-VC's CLI does (the demo's stand-in converter;
    /// `vc-standin --help`, runs in pipeline-media).
    #[command(disable_help_flag = true)]
    VcStandin {
        /// The converter's arguments (see `vc-standin --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Run the networks directly (parity checks at any size): `model forward
    /// --help` (runs in pipeline-worker).
    #[command(disable_help_flag = true)]
    Model {
        /// The model command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// The built-in stage kinds with their code versions and the program
    /// that runs each.
    #[command(hide = true)]
    Kinds,
    /// Look at element files: `elements inspect --help` (runs in pipeline-media).
    #[command(disable_help_flag = true)]
    Elements {
        /// The elements command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Run one step as a job (what executors call; not for people).
    #[command(hide = true)]
    ExecStep {
        /// The workspace holding the step.
        workspace: PathBuf,
        /// The step's id.
        step: i64,
        /// Run only this shard (a Slurm array task).
        #[arg(long)]
        shard: Option<u32>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Run this stage and everything it needs.
    #[arg(long)]
    until: Option<String>,
    /// Run only these stages (their inputs must exist).
    #[arg(long)]
    only: Vec<String>,
    /// Run these stages even if up to date.
    #[arg(long)]
    force: Vec<String>,
    /// Show what would run, and why, without running it.
    #[arg(long)]
    dry_run: bool,
    /// CPU slots for parallel steps (default: the number of cores).
    #[arg(short = 'j', long)]
    jobs: Option<usize>,
    /// Go on with independent stages after a failure.
    #[arg(long)]
    keep_going: bool,
    /// Where steps run: on this machine, or submitted to Slurm with sbatch
    /// (a stage's own `executor:` wins; see config/cluster.yaml).
    #[arg(long, value_enum, default_value = "local")]
    executor: Executor,
    /// The cluster profile (default: cluster.yaml in the pipeline's config folder).
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// Where models run: auto (CUDA when available), cpu or cuda.
    #[arg(long, value_enum, default_value = "auto")]
    device: Device,
    /// On Ctrl-C, SIGTERM or SIGHUP, leave this run's Slurm jobs running
    /// (the next run re-attaches to them) instead of cancelling them.
    #[arg(long)]
    detach: bool,
    /// Write the step lifecycle as JSON lines on stdout (one event per line:
    /// started, requeued, resubmitted, reattached, finished, interrupted, ...;
    /// then a summary) instead of words on stderr.
    #[arg(long)]
    json: bool,
    /// Submit to Slurm without `pipeline check` first (by default a failed
    /// check refuses the submission).
    #[arg(long)]
    no_check: bool,
}

#[derive(Subcommand)]
enum DiffCmd {
    /// What differs between two steps: OLD NEW by id, or by default the
    /// stage's last two.
    Diff {
        /// Two step ids, OLD then NEW (none: the stage's last two).
        steps: Vec<i64>,
        /// The stage (default: the one recorded last).
        #[arg(long)]
        stage: Option<String>,
        /// Show the values that did not change too.
        #[arg(long)]
        all: bool,
        /// Print the comparison as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum LineageCmd {
    /// Every recorded run and step as OpenLineage 2-0-2 run events (one JSON
    /// line each) or as one W3C PROV-JSON document.
    Export {
        /// openlineage (NDJSON run events) or prov (PROV-JSON).
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The OpenLineage namespace of the jobs (default: pipeline/<workspace folder name>).
        #[arg(long)]
        namespace: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Openlineage,
    Prov,
}

#[derive(Clone, Copy, ValueEnum)]
enum DagFormat {
    Text,
    Dot,
    Mermaid,
}

#[derive(Clone, Copy, ValueEnum)]
enum Executor {
    Local,
    Slurm,
}

#[derive(Clone, Copy, ValueEnum)]
enum Device {
    Auto,
    Cpu,
    Cuda,
}

/// The global options (`-f`, `-w`, `--profile`).
const GLOBALS: [&str; 3] = ["file", "workspace", "profile"];

/// Subcommands (by path) that read none of the global options: what the
/// program calls itself, and tools over files named in their own arguments.
/// Their help does not show the globals.
const WITHOUT_GLOBALS: &[&[&str]] = &[
    &["exec-step"],
    &["kinds"],
    &["vc-standin"],
    &["model"],
    &["elements"],
    &["bench", "models"],
    &["bench", "elements"],
    &["bench", "status"],
    &["bench", "hash"],
];

/// The command line as clap parses it, with the globals hidden where unused:
/// such a subcommand gets its own hidden copy of each global option, which
/// clap then does not propagate into it (mutating arguments after clap has
/// built the command would leave its argument index stale).
fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut c = Cli::command();
    let hidden: Vec<clap::Arg> = c
        .get_arguments()
        .filter(|a| GLOBALS.contains(&a.get_id().as_str()))
        .map(|a| {
            a.clone()
                .global(false)
                .hide(true)
                .default_value(None)
                .env(None)
        })
        .collect();
    for path in WITHOUT_GLOBALS {
        c = hide_globals(c, path, &hidden);
    }
    c.build();
    c
}

fn hide_globals(c: clap::Command, path: &[&str], hidden: &[clap::Arg]) -> clap::Command {
    match path {
        [] => {
            // An argument of its own under that id already keeps the global out.
            let own: Vec<clap::Arg> = hidden
                .iter()
                .filter(|h| c.get_arguments().all(|a| a.get_id() != h.get_id()))
                .cloned()
                .collect();
            c.args(own)
        }
        [first, rest @ ..] => {
            if c.find_subcommand(first).is_none() {
                // Behind a feature this build lacks.
                return c;
            }
            c.mut_subcommand(*first, |s| hide_globals(s, rest, hidden))
        }
    }
}

pub fn main() -> i32 {
    use clap::FromArgMatches;
    let cli = match command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Cmd::ExecStep {
        workspace,
        step,
        shard,
    } = &cli.command
    {
        return match pipeline::exec::step::exec_step(
            workspace,
            StepId(*step),
            *shard,
            pipeline::exec::registry,
        ) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("pipeline exec-step: {e:#}");
                1
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return 1;
        }
    };
    let workspace = cli.workspace.clone();
    let result = rt.block_on(async {
        let r = dispatch(cli).await;
        pipeline::store::close_all().await;
        r
    });
    match result {
        Ok(code) => code,
        Err(e) if disk_full(&e) => {
            eprintln!(
                "error: no space left on device at {}: the store could not record what \
                 happened ({e:#}). Nothing recorded is lost: free space there and run again, \
                 and the next run records the steps that finished meanwhile",
                workspace.join(".pipeline").display()
            );
            1
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Whether an error comes from a full disk: ENOSPC, or SQLite's
/// SQLITE_FULL ("database or disk is full", code 13).
fn disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io.raw_os_error() == Some(libc::ENOSPC);
        }
        if let Some(sqlx::Error::Database(db)) = c.downcast_ref::<sqlx::Error>() {
            return db.code().as_deref() == Some("13");
        }
        false
    })
}

fn load_dag(cli: &Cli) -> Result<Dag> {
    Dag::build(def::load(&cli.file, &cli.profile)?)
}

async fn dispatch(cli: Cli) -> Result<i32> {
    match &cli.command {
        Cmd::Run(a) => run_cmd(&cli, a).await,
        Cmd::Status { json } => status_cmd(&cli, *json).await,
        Cmd::Check(a) => check::check_cmd(&cli, a).await,
        Cmd::Detect(a) => detect::detect_cmd(&cli, a).await,
        Cmd::Dag { format } => {
            let dag = load_dag(&cli)?;
            print!(
                "{}",
                match format {
                    DagFormat::Text => dag.to_text(),
                    DagFormat::Dot => dag.to_dot(),
                    DagFormat::Mermaid => dag.to_mermaid(),
                }
            );
            Ok(0)
        }
        Cmd::Lineage {
            export:
                Some(LineageCmd::Export {
                    format,
                    output,
                    namespace,
                }),
            ..
        } => {
            let ws = Workspace::open(&cli.workspace).await?;
            let text = match format {
                ExportFormat::Openlineage => {
                    let ns = namespace.clone().unwrap_or_else(|| {
                        let name = ws
                            .root
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned());
                        format!("pipeline/{}", name.unwrap_or_default())
                    });
                    let mut out = String::new();
                    for e in export::openlineage(&ws, &ns).await? {
                        out.push_str(&serde_json::to_string(&e)?);
                        out.push('\n');
                    }
                    out
                }
                ExportFormat::Prov => {
                    serde_json::to_string_pretty(&export::prov(&ws).await?)? + "\n"
                }
            };
            match output {
                Some(f) => pipeline::util::write_atomic(f, text.as_bytes())
                    .with_context(|| format!("writing {}", f.display()))?,
                None => {
                    use std::io::Write;
                    // A reader that stops early (`| head`) ends the export quietly.
                    match std::io::stdout().lock().write_all(text.as_bytes()) {
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                        r => r.context("writing the export")?,
                    }
                }
            }
            Ok(0)
        }
        Cmd::Lineage {
            path,
            downstream,
            json,
            ..
        } => {
            let Some(path) = path else {
                anyhow::bail!(
                    "name an artifact (`pipeline lineage PATH`), or export the whole record \
                     (`pipeline lineage export --format openlineage|prov`)"
                );
            };
            let ws = Workspace::open(&cli.workspace).await?;
            let l = lineage::lineage(&ws, path, *downstream).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&l)?);
            } else {
                print!("{}", report::lineage_text(&l));
            }
            Ok(0)
        }
        Cmd::Metrics { cmd } | Cmd::Params { cmd } => {
            let DiffCmd::Diff {
                steps,
                stage,
                all,
                json,
            } = cmd;
            let ws = Workspace::open(&cli.workspace).await?;
            let metrics = matches!(cli.command, Cmd::Metrics { .. });
            let d = if metrics {
                compare::metrics_diff(&ws, steps, stage.as_deref(), *all).await?
            } else {
                compare::params_diff(&ws, steps, stage.as_deref(), *all).await?
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!(
                    "{}",
                    report::diff_text(if metrics { "metrics" } else { "params" }, &d)
                );
            }
            Ok(0)
        }
        Cmd::Checkout { path, step } => {
            let ws = Workspace::open(&cli.workspace).await?;
            ws.store.lock("pipeline checkout").await?;
            let done = pipeline::engine::checkout::checkout(&ws, path, StepId(*step)).await;
            ws.store.unlock_mine().await?;
            let o = done?;
            if o.already {
                println!(
                    "{} already holds the version step {} recorded ({})",
                    o.path,
                    o.step,
                    &o.hash[..16]
                );
            } else {
                println!(
                    "restored {} as step {} recorded it ({}, {} files)",
                    o.path,
                    o.step,
                    &o.hash[..16],
                    o.files
                );
                if let Some(k) = &o.kept {
                    println!("the version it replaced is kept in {k}");
                }
            }
            Ok(0)
        }
        Cmd::Report { stage, markdown } => report_cmd(&cli, stage.as_deref(), *markdown).await,
        Cmd::Verify { json } => {
            let ws = Workspace::open(&cli.workspace).await?;
            let (n, changed) = lineage::verify(&ws).await?;
            if *json {
                println!("{}", serde_json::json!({"checked": n, "changed": changed}));
            } else {
                for c in &changed {
                    match &c.now {
                        None => println!("missing   {}  (recorded {})", c.path, &c.recorded[..16]),
                        Some(h) => println!(
                            "changed   {}  (recorded {}, now {})",
                            c.path,
                            &c.recorded[..16],
                            &h[..16]
                        ),
                    }
                }
                println!(
                    "{n} artifacts checked, {} changed since recorded",
                    changed.len()
                );
            }
            Ok(if changed.is_empty() { 0 } else { 1 })
        }
        Cmd::Log { stage, step } => {
            let ws = Workspace::open(&cli.workspace).await?;
            let id = match step {
                Some(s) => StepId(*s),
                None => match ws.store.latest_step(stage).await? {
                    Some(s) => s.id,
                    None => {
                        // A name the pipeline does not know is a typo, not a
                        // stage that has yet to run.
                        if let Ok(dag) = load_dag(&cli) {
                            dag.lookup(stage, "log")?;
                        }
                        anyhow::bail!("stage {stage} has never run in this workspace")
                    }
                },
            };
            let f = ws.step_dir(id).join(pipeline::exec::job::LOG_FILE);
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            print!("{text}");
            Ok(0)
        }
        Cmd::Recover => recover_cmd(&cli.workspace).await,
        Cmd::Gc { dry_run } => {
            use pipeline::engine::gc;
            let ws = Workspace::open(&cli.workspace).await?;
            if !*dry_run {
                ws.store.lock("pipeline gc").await?;
            }
            let found = gc::find(&ws).await;
            let done = match (&found, *dry_run) {
                (Ok(g), false) => gc::remove(g),
                _ => Ok(()),
            };
            if !*dry_run {
                ws.store.unlock_mine().await?;
            }
            let garbage = found?;
            done?;
            let total: u64 = garbage.iter().map(|g| g.bytes).sum();
            for g in &garbage {
                let rel = g.path.strip_prefix(&ws.root).unwrap_or(&g.path);
                println!(
                    "{:>10}  {}  ({})",
                    pipeline::util::human_bytes(g.bytes),
                    rel.display(),
                    g.why
                );
            }
            println!(
                "{} {} in {} places{}",
                if *dry_run { "would free" } else { "freed" },
                pipeline::util::human_bytes(total),
                garbage.len(),
                if *dry_run {
                    " (dry run: nothing removed)"
                } else {
                    ""
                }
            );
            Ok(0)
        }
        Cmd::Unlock => {
            let ws = Workspace::open(&cli.workspace).await?;
            match ws.store.unlock_any().await? {
                Some(s) if s.host != pipeline::util::hostname() => eprintln!(
                    "cleared the lock of pid {} on host {} (`{}`); this machine cannot tell \
                     whether that process still runs: if it does, stop it, or two runs now \
                     write to this workspace",
                    s.pid, s.host, s.command
                ),
                Some(s) => eprintln!(
                    "cleared the lock of pid {} (`{}`), which is no longer running",
                    s.pid, s.command
                ),
                None => eprintln!("the workspace was not locked"),
            }
            Ok(0)
        }
        Cmd::Bench(a) => bench::run(a, &cli.workspace, &cli.file, &cli.profile).await,
        Cmd::Model { args } => Err(forward("pipeline-worker", "model", args)),
        Cmd::VcStandin { args } => Err(forward("pipeline-media", "vc-standin", args)),
        Cmd::Elements { args } => Err(forward("pipeline-media", "elements", args)),
        Cmd::Kinds => {
            let rows: Vec<_> = pipeline::stages::KINDS
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "kind": k.name,
                        "version": k.version,
                        "home": format!("{:?}", k.home).to_lowercase(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
            Ok(0)
        }
        Cmd::ExecStep { .. } => unreachable!("handled before the runtime starts"),
    }
}

/// Replaces this process with `program command ARGS` (the commands that
/// run in `pipeline-media` or `pipeline-worker`); returns only when that fails.
pub(crate) fn forward(program: &str, command: &str, args: &[std::ffi::OsString]) -> anyhow::Error {
    let mut all = vec![std::ffi::OsString::from(command)];
    all.extend(args.iter().cloned());
    pipeline::exec::step::exec_program(program, &all)
}

async fn run_cmd(cli: &Cli, a: &RunArgs) -> Result<i32> {
    let dag = load_dag(cli)?;
    let mut ws = Workspace::open(&cli.workspace).await?;
    dag.check_sources(&ws.root)?;
    match a.device {
        Device::Auto => {}
        Device::Cpu => std::env::set_var("PIPELINE_DEVICE", "cpu"),
        Device::Cuda => std::env::set_var("PIPELINE_DEVICE", "cuda"),
    }
    let opts = RunOptions {
        profile: cli.profile.clone(),
        until: a.until.clone(),
        only: a.only.clone(),
        force: a.force.clone(),
        dry_run: a.dry_run,
        jobs: a.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }),
        keep_going: a.keep_going,
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        executor: match a.executor {
            Executor::Local => run::ExecutorKind::Local,
            Executor::Slurm => run::ExecutorKind::Slurm,
        },
        detach: a.detach,
        no_check: a.no_check,
        cluster: ClusterConfig::load(
            &a.cluster
                .clone()
                .unwrap_or_else(|| dag.pipeline.config_dir.join("cluster.yaml")),
        )?,
    };
    let rep = if a.json {
        report::RunDisplay::Json(report::JsonReporter::new())
    } else {
        report::RunDisplay::Term(report::TermReporter::new())
    };
    // A dry run beside a live run only reads: it neither waits for that run
    // nor writes to the store it is writing.
    if opts.dry_run && ws.store.is_locked().await? {
        ws.look_only();
    }
    if !opts.dry_run {
        if let Some(stale) = ws.store.lock(&opts.command_line).await? {
            rep.note(&format!(
                "took over the workspace lock of pid {} on {} (`{}`), which is no longer running",
                stale.pid, stale.host, stale.command
            ));
        }
    }
    let result = run::run(&ws, &dag, &opts, &rep).await;
    if !opts.dry_run {
        ws.store.unlock_mine().await?;
    }
    let summary = result?;
    rep.finish(&summary, opts.dry_run);
    Ok(if let Some(sig) = summary.interrupted {
        128 + sig
    } else if summary.failed.is_empty() && summary.blocked.is_empty() {
        0
    } else {
        1
    })
}

async fn recover_cmd(workspace: &std::path::Path) -> Result<i32> {
    use pipeline::engine::recover;
    let root = workspace
        .canonicalize()
        .with_context(|| format!("resolving the workspace {}", workspace.display()))?;
    let db = root.join(".pipeline").join("state.db");
    if let Some(why) = recover::unusable(&db).await {
        let p = recover::keep_aside(&db)?;
        eprintln!(
            "the store could not be used ({why}); kept it as {}",
            p.display()
        );
    }
    let ws = Workspace::open_unchecked(&root).await?;
    ws.store.lock("pipeline recover").await?;
    let result = recover::recover(&ws).await;
    ws.store.unlock_mine().await?;
    let r = result?;
    let steps = r.succeeded + r.failed + r.interrupted + r.unreadable.len();
    if steps == 0 {
        eprintln!("the store knows every step folder: nothing to recover");
        return Ok(0);
    }
    eprintln!(
        "recovered {steps} steps from their folders: {} succeeded, {} failed, {} interrupted",
        r.succeeded, r.failed, r.interrupted
    );
    eprintln!(
        "{} outputs checked against their recorded hashes, {} changed since{}",
        r.outputs_checked,
        r.outputs_changed.len(),
        if r.outputs_changed.is_empty() {
            String::new()
        } else {
            format!(
                " (their stages will run again): {}",
                r.outputs_changed.join(", ")
            )
        }
    );
    if !r.without_record.is_empty() {
        eprintln!(
            "steps {:?} were written by an older version without their record: kept for \
             lineage, their stages will run again",
            r.without_record
        );
    }
    if !r.unreadable.is_empty() {
        eprintln!(
            "step folders {:?} hold no readable job.json: their ids stay reserved",
            r.unreadable
        );
    }
    Ok(0)
}

/// The stage named `name`, or else the pipeline's one stage of `kind`.
fn stage_of_kind<'a>(
    cli: &Cli,
    stages: &'a [def::StageSpec],
    kind: &str,
    name: Option<&str>,
) -> Result<&'a def::StageSpec> {
    if let Some(name) = name {
        return stages
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("no stage named '{name}' in {}", cli.file.display()));
    }
    let found: Vec<&def::StageSpec> = stages.iter().filter(|s| s.kind_name() == kind).collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => anyhow::bail!(
            "{} has no stage of kind {kind}; name one with --stage",
            cli.file.display()
        ),
        many => anyhow::bail!(
            "{} has {} stages of kind {kind} ({}): name one with --stage",
            cli.file.display(),
            many.len(),
            many.iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

async fn report_cmd(cli: &Cli, stage: Option<&str>, markdown: bool) -> Result<i32> {
    let dag = load_dag(cli)?;
    let spec = stage_of_kind(cli, dag.stages(), "report", stage)?;
    let Some(out) = spec.outs.first() else {
        anyhow::bail!("stage {} declares no output", spec.name);
    };
    let ws = Workspace::open(&cli.workspace).await?;
    let dir = out.path.under(&ws.root);
    let page = dir.join("index.html");
    if ws.store.latest_artifact(out.path.as_str()).await?.is_none() || !page.is_file() {
        anyhow::bail!(
            "no report yet at {}: `pipeline run --until {}` makes it",
            dir.display(),
            spec.name
        );
    }
    let rows = status::stage_rows(&ws, &dag, &cli.profile).await?;
    let row = rows.iter().find(|r| r.stage == spec.name);
    if markdown {
        let md = dir.join("report.md");
        let text =
            std::fs::read_to_string(&md).with_context(|| format!("reading {}", md.display()))?;
        print!("{text}");
    } else {
        println!("report: {}", page.display());
        println!("markdown: {}", dir.join("report.md").display());
    }
    match row {
        Some(r) if r.state != "up_to_date" && r.state != "frozen" => eprintln!(
            "note: the report is not up to date ({}: {}): `pipeline run --until {}` brings it up to date",
            r.state.replace('_', " "),
            r.why.join("; "),
            spec.name
        ),
        _ => {}
    }
    Ok(0)
}

async fn status_cmd(cli: &Cli, json: bool) -> Result<i32> {
    let dag = load_dag(cli)?;
    let ws = Workspace::open(&cli.workspace).await?;
    let rows = status::stage_rows(&ws, &dag, &cli.profile).await?;
    let cannot_run = rows.iter().any(status::StageRow::cannot_run);
    let allowed = pipeline::exec::confine::allowed_roots(&ws.root)?;
    if json {
        let last_run = status::last_run(&ws).await?;
        let doc = serde_json::json!({"profile": cli.profile, "last_run": last_run, "stages": rows, "allow_outside": allowed});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", report::status_text(&rows));
        for a in &allowed {
            println!(
                "outputs may be written outside the workspace under {} ({})",
                a.display(),
                pipeline::exec::confine::FILE
            );
        }
    }
    // A stage that cannot run is an error to fix, not a state to wait out.
    Ok(if cannot_run { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible argument of every subcommand, as `path: id`.
    fn arguments(c: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for a in c.get_arguments() {
            if !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version") {
                out.push((format!("{path}: {}", a.get_id()), a.clone()));
            }
        }
        for s in c.get_subcommands() {
            arguments(s, &format!("{path} {}", s.get_name()), out);
        }
    }

    #[test]
    fn every_argument_has_a_help_line() {
        let mut all = Vec::new();
        arguments(&command(), "pipeline", &mut all);
        assert!(
            all.len() > 40,
            "{} arguments: the walk missed some",
            all.len()
        );
        let missing: Vec<&str> = all
            .iter()
            .filter(|(_, a)| a.get_help().is_none() && a.get_long_help().is_none())
            .map(|(p, _)| p.as_str())
            .collect();
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    #[test]
    fn internal_subcommands_do_not_show_the_globals() {
        let mut all = Vec::new();
        arguments(&command(), "pipeline", &mut all);
        // By the option (`--workspace`), not the id: exec-step's positional
        // WORKSPACE is its own.
        let shown = |path: &str, long: &str| {
            all.iter().any(|(p, a)| {
                p.rsplit_once(": ").map(|(p, _)| p) == Some(path) && a.get_long() == Some(long)
            })
        };
        for path in WITHOUT_GLOBALS {
            let path = format!("pipeline {}", path.join(" "));
            for g in GLOBALS {
                assert!(!shown(&path, g), "{path} shows --{g}");
            }
        }
        // Where they matter they are still shown.
        for path in [
            "pipeline",
            "pipeline status",
            "pipeline run",
            "pipeline bench startup",
        ] {
            for g in GLOBALS {
                assert!(shown(path, g), "{path} does not show {g}");
            }
        }
    }

    #[test]
    fn hidden_globals_still_parse() {
        use clap::FromArgMatches;
        let m = command()
            .try_get_matches_from(["pipeline", "-w", "ws", "status", "--json"])
            .unwrap();
        let cli = Cli::from_arg_matches(&m).unwrap();
        assert_eq!(cli.workspace, PathBuf::from("ws"));
        // A global before an internal subcommand still parses (and is unused).
        let m = command()
            .try_get_matches_from(["pipeline", "-w", "ws", "--profile", "p", "kinds"])
            .unwrap();
        assert_eq!(Cli::from_arg_matches(&m).unwrap().profile, "p");
        let m = command()
            .try_get_matches_from(["pipeline", "exec-step", "ws", "3", "--shard", "1"])
            .unwrap();
        assert!(matches!(
            Cli::from_arg_matches(&m).unwrap().command,
            Cmd::ExecStep {
                step: 3,
                shard: Some(1),
                ..
            }
        ));
    }
}
