//! `pipeline-worker detect`: scores the clips of an element folder cut by
//! `pipeline-media elements extract` with a trained stage-2 model, as the
//! stage-2 stage scores its test split.
//!
//! The network is built from the stage-2 parameters given (`--params`: the
//! `model` part builds [`AvDetector`], the `recipe` gives the batch size and
//! loader threads) and loads `model.safetensors` of the checkpoint folder
//! strictly: it holds every variable, the frozen stage-1 encoder and head
//! included. Clips are scored in eval mode by [`Stage2Task`]'s scoring,
//! batches of `recipe.batch_size`.
//!
//! Output, one line per input file in the order given (`inputs.jsonl`):
//! `FILE: fake probability P (audio A, A2V V; fusion weights audio WA, A2V WV)`
//! or `FILE: cannot read: REASON`. With `--json`, one object per line:
//! `{"file", "key", "final", "audio", "a2v", "w_audio", "w_a2v"}` (plus
//! `category` when the file's folders name one), or
//! `{"file", "key", "error"}`. Exit status 0 when at least one file was
//! scored, 1 when none was.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use tch::nn::VarStore;

use super::checkpoint::load_strict;
use super::data::{ElementSet, Split};
use super::device::DeviceChoice;
use super::metrics::ScoredClip;
use super::recipes::{Stage2Params, Stage2Phase, Stage2Task};
use super::stage2::AvDetector;
use super::stage_run::{check_frame_size, parse_params, score_split};
use pipeline_core::elementset::{read_inputs, ExtractedInput};

/// The weights file of a stage-2 output folder.
pub const MODEL_FILE: &str = "model.safetensors";

/// Arguments of `pipeline-worker detect`.
#[derive(clap::Args, Debug, Clone)]
pub struct DetectArgs {
    /// The element folder (`pipeline-media elements extract --out`).
    #[arg(long)]
    pub elements: PathBuf,
    /// The stage-2 output folder holding model.safetensors.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The stage-2 parameters the model was trained with: a JSON file or
    /// inline JSON (as in `config/<profile>/stage2.json`).
    #[arg(long)]
    pub params: String,
    /// One JSON object per file instead of a line of text.
    #[arg(long)]
    pub json: bool,
    /// Torch threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// The scores of one clip, by name.
struct Scores {
    fin: f64,
    audio: f64,
    a2v: f64,
    w_audio: f64,
    w_a2v: f64,
}

impl Scores {
    fn of(c: &ScoredClip) -> Result<Self> {
        let s = |name: &str| {
            c.scores
                .get(name)
                .copied()
                .with_context(|| format!("stage 2 gave no '{name}' score"))
        };
        let (w_audio, w_a2v) = c.weights.context("stage 2 gave no fusion weights")?;
        Ok(Scores {
            fin: s("final")?,
            audio: s("audio")?,
            a2v: s("a2v")?,
            w_audio,
            w_a2v,
        })
    }
}

fn read_params(arg: &str) -> Result<Stage2Params> {
    let text = if arg.trim_start().starts_with('{') {
        arg.to_string()
    } else {
        std::fs::read_to_string(arg)
            .with_context(|| format!("cannot read the stage-2 parameters file {arg}"))?
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("--params {arg}: not JSON"))?;
    parse_params("stage2", &v)
}

/// Scores every clip of `elements` with the model of `checkpoint`; returns
/// each clip's scores by manifest row.
fn score_all(
    elements: &Path,
    checkpoint: &Path,
    params: &Stage2Params,
    threads: usize,
) -> Result<Vec<Option<ScoredClip>>> {
    let model = checkpoint.join(MODEL_FILE);
    let device = DeviceChoice::from_env()?.resolve()?;
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
    let set = Arc::new(
        ElementSet::open(elements)
            .with_context(|| format!("opening elements {}", elements.display()))?,
    );
    check_frame_size(&set, params.model.visual_backbone.img_size, "detect")?;
    let vs = VarStore::new(device);
    let net = AvDetector::new(vs.root(), &params.model);
    load_strict(&vs, &model).with_context(|| {
        format!(
            "loading the stage-2 model {}: are the stage-2 parameters the ones it was trained with?",
            model.display()
        )
    })?;
    let task = Stage2Task {
        net: &net,
        set: &set,
        params,
        phase: Stage2Phase::Joint,
    };
    let (order, clips) = score_split(&task, &set, &params.recipe, device, Split::Test)?;
    ensure!(
        order.len() == clips.len(),
        "scored {} clips for {} loaded",
        clips.len(),
        order.len()
    );
    let mut by_row: Vec<Option<ScoredClip>> = vec![None; set.clips.len()];
    for (row, clip) in order.into_iter().zip(clips) {
        by_row[row] = Some(clip);
    }
    Ok(by_row)
}

/// One output line for `input`.
fn line(input: &ExtractedInput, scored: Option<&Scores>, json: bool) -> Result<String> {
    let error = input
        .error
        .as_deref()
        .unwrap_or("it has no clip in the element folder");
    Ok(match (scored, json) {
        (Some(s), false) => format!(
            "{}: fake probability {:.4} (audio {:.4}, A2V {:.4}; fusion weights audio {:.3}, A2V {:.3})",
            input.file, s.fin, s.audio, s.a2v, s.w_audio, s.w_a2v
        ),
        (None, false) => format!("{}: cannot read: {error}", input.file),
        (Some(s), true) => {
            let mut v = serde_json::json!({
                "file": input.file,
                "key": input.key,
                "final": s.fin,
                "audio": s.audio,
                "a2v": s.a2v,
                "w_audio": s.w_audio,
                "w_a2v": s.w_a2v,
            });
            if let Some(c) = input.category {
                v["category"] = c.folder().into();
            }
            serde_json::to_string(&v)?
        }
        (None, true) => serde_json::to_string(&serde_json::json!({
            "file": input.file,
            "key": input.key,
            "error": error,
        }))?,
    })
}

/// Runs `pipeline-worker detect`; returns the exit status.
pub fn run(args: DetectArgs) -> Result<i32> {
    let model = args.checkpoint.join(MODEL_FILE);
    ensure!(
        model.is_file(),
        "{} holds no {MODEL_FILE}: give --checkpoint a stage-2 output folder \
         (models/stage2 after `pipeline run --until stage2`)",
        args.checkpoint.display()
    );
    let params = read_params(&args.params)?;
    let inputs = read_inputs(&args.elements)?;
    let by_row = if inputs.iter().any(|i| i.row.is_some()) {
        score_all(&args.elements, &args.checkpoint, &params, args.threads)?
    } else {
        Vec::new()
    };
    let mut scored = 0;
    for input in &inputs {
        let s = match input
            .row
            .and_then(|r| by_row.get(r))
            .and_then(Option::as_ref)
        {
            Some(c) => Some(Scores::of(c)?),
            None => None,
        };
        scored += usize::from(s.is_some());
        println!("{}", line(input, s.as_ref(), args.json)?);
    }
    Ok(if scored > 0 { 0 } else { 1 })
}
