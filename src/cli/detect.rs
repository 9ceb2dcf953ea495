//! `pipeline detect VIDEO...`: the fake probability of any video files under
//! a trained stage-2 model.
//!
//! Two child processes do the work, in a scratch folder under
//! `.pipeline/tmp` that is removed afterwards: `pipeline-media elements
//! extract` cuts each file's element exactly as the elements stage does (one
//! 3.2 s window whose start is drawn from the seed and the file's key: its
//! path under the corpus root when it lies in a FakeAVCeleb-shaped folder,
//! else its file name; see that command), then `pipeline-worker detect`
//! scores the elements and prints one line per file, in the order given: the
//! fused probability, the audio-only and A2V-only scores and the fusion
//! weights, or why the file could not be read.
//!
//! The model is `--checkpoint` or, by default, the newest recorded output of
//! the pipeline's stage of kind `stage2`. Its parameters come from the store:
//! the stage-2 parameters of the step that produced the model, and the
//! elements parameters of the step that produced that step's `elements`
//! input, so the network and the preprocessing are the ones it was trained
//! with. A `--checkpoint` the store did not record takes the parameters the
//! pipeline gives the stage-2 and elements stages now (`--profile`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use pipeline::engine::params;
use pipeline::engine::workspace::Workspace;
use pipeline::store::StepId;

use super::{load_dag, Cli};

/// The weights file of a stage-2 output folder.
const MODEL_FILE: &str = "model.safetensors";

/// Arguments of `pipeline detect`.
#[derive(clap::Args)]
pub(crate) struct DetectArgs {
    /// The video files to score.
    #[arg(required = true)]
    videos: Vec<PathBuf>,
    /// A stage-2 output folder holding model.safetensors (default: the
    /// workspace's newest stage-2 model).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// The stage-2 stage whose model and parameters to use (default: the
    /// pipeline's stage of kind stage2).
    #[arg(long)]
    stage: Option<String>,
    /// One JSON object per file instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// The model to run and the parameters it goes with.
struct Model {
    dir: PathBuf,
    stage2: Value,
    /// `None`: `pipeline-media`'s defaults (the paper profile's extraction).
    elements: Option<Value>,
}

/// Removes the scratch folder however detection ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The recorded parameters of step `id`.
async fn step_params(ws: &Workspace, id: i64) -> Result<Value> {
    let step = ws.store.step(StepId(id)).await?;
    serde_json::from_str(&step.params_json).with_context(|| {
        format!(
            "the store's record of step {id} ({}) holds unreadable parameters",
            step.stage
        )
    })
}

/// Finds the model and its parameters.
async fn resolve(cli: &Cli, ws: &Workspace, a: &DetectArgs) -> Result<Model> {
    if let Some(dir) = &a.checkpoint {
        if !dir.join(MODEL_FILE).is_file() {
            bail!(
                "{} holds no {MODEL_FILE}: give --checkpoint a stage-2 output folder \
                 (models/stage2 after `pipeline run --until stage2`), or leave it out to use \
                 the workspace's newest stage-2 model",
                dir.display()
            );
        }
    }
    let dag = load_dag(cli)?;
    let stages = dag.stages();
    let spec = super::stage_of_kind(cli, stages, "stage2", a.stage.as_deref())?;
    let Some(out) = spec.outs.first() else {
        bail!("stage {} declares no output", spec.name);
    };
    let dir = match &a.checkpoint {
        Some(dir) => dir.clone(),
        None => {
            let dir = out.path.under(&ws.root);
            if ws.store.latest_artifact(out.path.as_str()).await?.is_none()
                || !dir.join(MODEL_FILE).is_file()
            {
                bail!(
                    "no stage-2 model yet at {}: `pipeline run --until {}` trains it",
                    dir.display(),
                    spec.name
                );
            }
            dir
        }
    };
    // The step that recorded this folder, when the store knows it.
    let recorded = match std::fs::canonicalize(&dir)?.strip_prefix(&ws.root) {
        Ok(rel) => ws.store.latest_artifact(&rel.to_string_lossy()).await?,
        Err(_) => None,
    };
    if let Some(step) = recorded.and_then(|a| a.step_id) {
        let stage2 = step_params(ws, step).await?;
        let elements = ws
            .store
            .step_inputs(StepId(step))
            .await?
            .into_iter()
            .find(|p| p.name == "elements")
            .and_then(|p| p.artifact.step_id);
        let elements = match elements {
            Some(id) => Some(step_params(ws, id).await?),
            None => None,
        };
        return Ok(Model {
            dir,
            stage2,
            elements,
        });
    }
    // Not recorded: the parameters the pipeline gives the stages now.
    let stage2 = params::resolve(&dag.pipeline, spec, &cli.profile, &ws.root)?;
    let elements_stage = spec
        .deps
        .iter()
        .find(|d| d.name == "elements")
        .and_then(|d| {
            stages
                .iter()
                .find(|s| s.outs.iter().any(|o| o.path == d.path))
        });
    let elements = match elements_stage {
        Some(s) => Some(params::resolve(&dag.pipeline, s, &cli.profile, &ws.root)?),
        None => None,
    };
    Ok(Model {
        dir,
        stage2,
        elements,
    })
}

/// Runs a sibling program to its end; its output goes to ours.
fn run_child(program: &str, args: &[&std::ffi::OsStr]) -> Result<i32> {
    let exe = pipeline::exec::step::program_exe(program)?;
    let status = Command::new(&exe)
        .args(args)
        .status()
        .with_context(|| format!("starting {}", exe.display()))?;
    Ok(status.code().unwrap_or(1))
}

/// Runs `pipeline detect`: 0 when at least one file was scored, 1 otherwise.
pub(crate) async fn detect_cmd(cli: &Cli, a: &DetectArgs) -> Result<i32> {
    let ws = Workspace::open(&cli.workspace).await?;
    let model = resolve(cli, &ws, a).await?;
    let scratch = ws
        .root
        .join(".pipeline")
        .join("tmp")
        .join(format!("detect-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let scratch = Scratch(scratch);
    let elements = scratch.0.join("elements");
    let stage2_file = scratch.0.join("stage2.json");
    std::fs::write(&stage2_file, model.stage2.to_string())
        .with_context(|| format!("cannot write {}", stage2_file.display()))?;
    let mut media: Vec<&std::ffi::OsStr> =
        vec!["elements".as_ref(), "extract".as_ref(), "--quiet".as_ref()];
    media.extend(["--out".as_ref(), elements.as_os_str()]);
    let elements_file = scratch.0.join("elements.json");
    if let Some(p) = &model.elements {
        std::fs::write(&elements_file, p.to_string())
            .with_context(|| format!("cannot write {}", elements_file.display()))?;
        media.extend(["--params".as_ref(), elements_file.as_os_str()]);
    }
    media.push("--".as_ref());
    media.extend(a.videos.iter().map(|v| v.as_os_str()));
    let code = run_child("pipeline-media", &media)?;
    if code != 0 {
        bail!("pipeline-media could not cut the elements (exit status {code}; its error is above)");
    }
    let mut worker: Vec<&std::ffi::OsStr> = vec![
        "detect".as_ref(),
        "--elements".as_ref(),
        elements.as_os_str(),
        "--checkpoint".as_ref(),
        model.dir.as_os_str(),
        "--params".as_ref(),
        stage2_file.as_os_str(),
    ];
    if a.json {
        worker.push("--json".as_ref());
    }
    let code = run_child("pipeline-worker", &worker)?;
    drop(scratch);
    Ok(code)
}
