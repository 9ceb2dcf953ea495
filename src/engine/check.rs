//! `pipeline check`: what can be known to fail before any step runs, checked
//! in seconds, so that a run does not learn it after hours in a Slurm queue.
//! The reference's own logs hold the two cases this exists for: a
//! 10,000-epoch training whose validation set held one class ("AUC: nan"),
//! and a training that died in its first epoch on absolute paths that did not
//! exist.
//!
//! For the stages a run would run (stale ones; an up-to-date stage is not
//! looked at), it checks:
//!
//! - **inputs**: every declared input that no stage makes exists, and so do
//!   the files the parameters name (elements' `split.file`, seedvc's `cwd`,
//!   any absolute path anywhere in the parameters or in the split file);
//! - **corpus**: every video of an elements or seedvc stage's corpus (when it
//!   is there now and this run does not remake it) opens with a video and an
//!   audio stream, and every video `meta_data.csv` lists is there. FFmpeg
//!   does that, so `pipeline-media check-corpus` does, in parallel and
//!   memoized by content in `.pipeline/check/probe-memo.json` (the stat
//!   cache's hashes handed over); a share of bad videos
//!   within the stage's `max_failed_fraction` is named but passes, as the
//!   stage itself would skip them;
//! - **split**: each model stage's training, validation, test (when there
//!   is one) and fusion (stage 2's refit) parts hold both classes, as the
//!   stage's data loader labels them, and every category its parameters name
//!   for that part; read from the element set's `manifest.jsonl` when it is
//!   final, or else computed by `pipeline-media` with the elements stage's
//!   own split function from the corpus (with the voice clones seedvc will
//!   make of each RVRA video);
//! - **manifest**: every shard an element set's manifest names exists.
//!
//! `pipeline run` runs it through [`Preflight`]; `pipeline check` prints it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::dag::Dag;
use super::params;
use super::pipeline::{Action, PortSpec, StageSpec};
use super::plan::{Planner, Verdict};
use super::run::{evaluate_all, ExecutorKind, RunOptions};
use super::workspace::Workspace;
use crate::elementset::{read_manifest, Split};
use crate::relpath::RelPath;
use crate::stages::category::Category;
use crate::stages::corpus_check::{CorpusReport, PlannedClip};
use crate::stages::grid::GridFile;
use crate::stages::media_params::{ElementsParams, SeedVcParams};
use crate::stages::model_params::{BaselineParams, Stage1Params, Stage2Params};
use crate::stages::parse_over_defaults;

/// The probe's memo, under the workspace's `.pipeline/`.
const PROBE_MEMO: &str = "check/probe-memo.json";
/// The corpus files' hashes, as the engine hands them to the probe.
const PROBE_HASHES: &str = "check/probe-hashes.json";

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    /// The stage as a whole (its parameters do not resolve, say).
    Stage,
    Inputs,
    Params,
    Corpus,
    Split,
    Manifest,
}

impl Area {
    fn name(self) -> &'static str {
        match self {
            Area::Stage => "stage",
            Area::Inputs => "inputs",
            Area::Params => "params",
            Area::Corpus => "corpus",
            Area::Split => "split",
            Area::Manifest => "manifest",
        }
    }
}

/// How a finding counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    /// Worth reading, not a failure (a bad video within the stage's
    /// tolerance, a part that can only be checked later).
    Note,
    Fail,
}

/// One line of the check.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub stage: String,
    pub area: Area,
    pub level: Level,
    pub text: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = match self.level {
            Level::Ok => "ok  ",
            Level::Note => "note",
            Level::Fail => "FAIL",
        };
        write!(
            f,
            "{mark} {} ({}): {}",
            self.stage,
            self.area.name(),
            self.text
        )
    }
}

/// Every finding of one check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.level != Level::Fail)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.level == Level::Fail)
    }

    fn add(&mut self, stage: &str, area: Area, level: Level, text: String) {
        self.findings.push(Finding {
            stage: stage.to_string(),
            area,
            level,
            text,
        });
    }

    fn ok(&mut self, stage: &str, area: Area, text: String) {
        self.add(stage, area, Level::Ok, text);
    }

    fn note(&mut self, stage: &str, area: Area, text: String) {
        self.add(stage, area, Level::Note, text);
    }

    fn fail(&mut self, stage: &str, area: Area, text: String) {
        self.add(stage, area, Level::Fail, text);
    }
}

/// The model kinds whose data the split checks are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelKind {
    Stage1,
    Stage2,
    Baseline,
    Sweep,
}

impl ModelKind {
    fn of(spec: &StageSpec) -> Option<ModelKind> {
        match &spec.action {
            Action::Builtin { kind } => match kind.as_str() {
                "stage1" => Some(ModelKind::Stage1),
                "stage2" => Some(ModelKind::Stage2),
                "baseline" => Some(ModelKind::Baseline),
                "stage2_sweep" => Some(ModelKind::Sweep),
                _ => None,
            },
            Action::Command { .. } => None,
        }
    }
}

/// The media kinds that read a FakeAVCeleb-shaped corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CorpusKind {
    Elements,
    SeedVc,
}

impl CorpusKind {
    fn of(spec: &StageSpec) -> Option<CorpusKind> {
        match &spec.action {
            Action::Builtin { kind } => match kind.as_str() {
                "elements" => Some(CorpusKind::Elements),
                "seedvc" => Some(CorpusKind::SeedVc),
                _ => None,
            },
            Action::Command { .. } => None,
        }
    }

    /// The inputs that are corpora: all of an elements stage's; seedvc's
    /// `fakeavceleb` (its `vox2` holds reference audio, not videos).
    fn corpora(self, spec: &StageSpec) -> Vec<&PortSpec> {
        spec.deps
            .iter()
            .filter(|d| self == CorpusKind::Elements || d.name == "fakeavceleb")
            .collect()
    }

    /// The categories the stage reads (none: all); seedvc converts RVRA only.
    fn categories(self) -> &'static [Category] {
        match self {
            CorpusKind::Elements => &[],
            CorpusKind::SeedVc => &[Category::Rvra],
        }
    }

    /// The share of bad items the stage tolerates.
    fn tolerance(self, params: &Value) -> Result<f64> {
        Ok(match self {
            CorpusKind::Elements => ElementsParams::from_json(params)?.max_failed_fraction,
            CorpusKind::SeedVc => SeedVcParams::from_json(params)?.max_failed_fraction,
        })
    }
}

/// What a model stage reads of one part of the split.
struct PartRule {
    part: Split,
    /// `None`: every clip of the part; `Some((key, fakes))`: the real clips
    /// and the fake categories parameter `key` names (stage 1).
    reads: Option<(&'static str, Vec<Category>)>,
    /// A parameter that names categories the part must hold.
    named: Option<(&'static str, Vec<Category>)>,
    /// An empty part fails (else it means "no metrics of this part").
    required: bool,
    /// Stage 1 pairs each fake with a real clip of its identity.
    pairs: bool,
}

impl PartRule {
    fn all(part: Split, required: bool) -> PartRule {
        PartRule {
            part,
            reads: None,
            named: None,
            required,
            pairs: false,
        }
    }

    fn reads(&self, c: Category) -> bool {
        match &self.reads {
            None => true,
            Some((_, fakes)) => c == Category::Rvra || fakes.contains(&c),
        }
    }

    /// What a one-class part breaks.
    fn consequence(&self) -> &'static str {
        match self.part {
            Split::Train => "the stage would learn one class",
            Split::Val => "AUC is undefined, so no epoch can be selected",
            Split::Test => "the test AUC is undefined",
            Split::Fusion => "the fusion refit would learn one class",
        }
    }
}

fn part_name(s: Split) -> &'static str {
    match s {
        Split::Train => "training",
        Split::Val => "validation",
        Split::Test => "test",
        Split::Fusion => "fusion",
    }
}

/// The parts a model stage reads and what each must hold, from the same
/// parameter types the worker trains from. Every stage scores a test part
/// when it holds clips; stage 2 (and a sweep point) with `fusion_refit`
/// trains on the fusion part.
fn rules(kind: ModelKind, params: &Value) -> Result<Vec<PartRule>> {
    Ok(match kind {
        ModelKind::Stage1 => {
            let p: Stage1Params = parse_over_defaults(params)?;
            vec![
                PartRule {
                    part: Split::Train,
                    reads: Some(("train_fakes", p.train_fakes.clone())),
                    named: Some(("train_fakes", p.train_fakes.clone())),
                    required: true,
                    pairs: true,
                },
                PartRule {
                    part: Split::Val,
                    reads: Some(("val_fakes", p.val_fakes.clone())),
                    named: Some(("val_fakes", p.val_fakes.clone())),
                    required: true,
                    pairs: false,
                },
                PartRule {
                    part: Split::Test,
                    reads: Some(("val_fakes", p.val_fakes)),
                    named: None,
                    required: false,
                    pairs: false,
                },
            ]
        }
        ModelKind::Baseline => {
            let _: BaselineParams = parse_over_defaults(params)?;
            vec![
                PartRule::all(Split::Train, true),
                PartRule::all(Split::Val, true),
                PartRule::all(Split::Test, false),
            ]
        }
        ModelKind::Stage2 | ModelKind::Sweep => {
            let configs = match kind {
                ModelKind::Sweep => GridFile::parse(params)?
                    .runs()?
                    .into_iter()
                    .map(|(_, cfg)| cfg)
                    .collect(),
                _ => vec![params.clone()],
            };
            let mut refit = false;
            for cfg in &configs {
                let p: Stage2Params = parse_over_defaults(cfg)?;
                refit |= p.fusion_refit.is_some();
            }
            let mut r = vec![
                PartRule::all(Split::Train, true),
                PartRule::all(Split::Val, true),
                PartRule::all(Split::Test, false),
            ];
            if refit {
                r.push(PartRule::all(Split::Fusion, true));
            }
            r
        }
    })
}

/// The split checks of one model stage on `clips`; `fix` says where the
/// split is made.
fn check_split(stage: &str, rules: &[PartRule], clips: &[PlannedClip], fix: &str, r: &mut Report) {
    for rule in rules {
        let part = part_name(rule.part);
        let read: Vec<&PlannedClip> = clips
            .iter()
            .filter(|c| c.split == rule.part && rule.reads(c.category))
            .collect();
        let n = read.len();
        let fakes = read.iter().filter(|c| c.category.y_video()).count();
        let reals = n - fakes;
        let counting = match &rule.reads {
            Some((key, _)) => format!("RVRA and the fakes '{key}' names"),
            None => String::new(),
        };
        let (of, among) = match counting.is_empty() {
            true => (String::new(), String::new()),
            false => (format!(" ({counting})"), format!(", counting {counting}")),
        };
        if n == 0 {
            if rule.required {
                r.fail(
                    stage,
                    Area::Split,
                    format!(
                        "the {part} split holds no clip{of}; {} — {fix}",
                        rule.consequence()
                    ),
                );
            } else {
                r.note(
                    stage,
                    Area::Split,
                    format!("the {part} split is empty: the stage reports no {part} metrics"),
                );
            }
            continue;
        }
        let mut failed = false;
        if fakes == 0 || reals == 0 {
            let (only, none) = if fakes == 0 {
                ("real", "fake")
            } else {
                ("fake", "real")
            };
            r.fail(
                stage,
                Area::Split,
                format!(
                    "the {part} split holds only {only} clips (0 {none} of {n}{among}); {} — {fix}",
                    rule.consequence()
                ),
            );
            failed = true;
        }
        if let Some((key, named)) = &rule.named {
            for c in named {
                if !read.iter().any(|x| x.category == *c) {
                    r.fail(
                        stage,
                        Area::Split,
                        format!(
                            "parameter '{key}' names {c}, but the {part} split holds none of it \
                             — {fix}, or drop {c} from '{key}'"
                        ),
                    );
                    failed = true;
                }
            }
        }
        if rule.pairs && !failed {
            let with_real: BTreeSet<&str> = read
                .iter()
                .filter(|c| !c.category.y_video())
                .map(|c| c.identity.as_str())
                .collect();
            if !read
                .iter()
                .any(|c| c.category.y_video() && with_real.contains(c.identity.as_str()))
            {
                r.fail(
                    stage,
                    Area::Split,
                    format!(
                        "no identity of the {part} split has both a real clip and a fake the \
                         stage trains on, and stage 1 pairs each fake with a real clip of its \
                         identity — {fix}"
                    ),
                );
                failed = true;
            }
        }
        if !failed {
            r.ok(
                stage,
                Area::Split,
                format!("the {part} split holds {reals} real and {fakes} fake clips{of}"),
            );
        }
    }
}

/// Reads an element set's manifest and checks that every shard it names is
/// there; the clips, when the manifest could be read.
fn read_element_set(
    ws: &Workspace,
    stage: &str,
    rel: &RelPath,
    remake: &str,
    r: &mut Report,
) -> Option<Vec<PlannedClip>> {
    let dir = rel.under(&ws.root);
    let records = match read_manifest(&dir) {
        Ok(records) => records,
        Err(e) => {
            r.fail(stage, Area::Manifest, format!("{e:#} — {remake}"));
            return None;
        }
    };
    let shards: BTreeSet<&str> = records.iter().map(|c| c.shard.as_str()).collect();
    let mut missing = Vec::new();
    for s in &shards {
        let p = Path::new(s);
        let inside = p.components().count() == 1 && !p.is_absolute() && *s != "..";
        if !inside {
            r.fail(
                stage,
                Area::Manifest,
                format!(
                    "{rel}/manifest.jsonl names the shard '{s}', which is not a file name in \
                     its folder (a path that resolves elsewhere) — {remake}"
                ),
            );
        } else if !dir.join(p).is_file() {
            missing.push(*s);
        }
    }
    if !missing.is_empty() {
        r.fail(
            stage,
            Area::Manifest,
            format!(
                "{rel}/manifest.jsonl names {} shard(s) that do not exist: {} — {remake}",
                missing.len(),
                missing.join(", ")
            ),
        );
    } else {
        r.ok(
            stage,
            Area::Manifest,
            format!(
                "{rel}: {} clips in {} shards, every shard present",
                records.len(),
                shards.len()
            ),
        );
    }
    Some(
        records
            .into_iter()
            .map(|c| PlannedClip {
                identity: c.identity,
                category: c.category,
                split: c.split,
            })
            .collect(),
    )
}

/// The stage that makes `path`, if any.
fn producer(dag: &Dag, path: &RelPath) -> Option<usize> {
    dag.stages()
        .iter()
        .position(|s| s.outs.iter().any(|o| o.path.overlaps(path)))
}

/// A model stage's element-set input and where its split is made: the
/// producing stage (with its parameter file) or the set itself.
struct ElementsInput<'a> {
    dep: &'a PortSpec,
    producer: Option<usize>,
    /// What to change when the split is wrong.
    fix: String,
    /// What to do when the set is damaged.
    remake: String,
}

fn elements_input<'a>(
    dag: &Dag,
    profile: &str,
    spec: &'a StageSpec,
    r: &mut Report,
) -> Option<ElementsInput<'a>> {
    let Some(dep) = spec.deps.iter().find(|d| d.name == "elements") else {
        r.fail(
            &spec.name,
            Area::Inputs,
            format!(
                "declares no input named `elements` (the element set it trains on); name it in {}",
                spec.defined_in.display()
            ),
        );
        return None;
    };
    let producer = producer(dag, &dep.path);
    let (fix, remake) = match producer.map(|p| &dag.stages()[p]) {
        Some(e) => (
            format!(
                "change the split (split.* in {}, or the file its split.file names)",
                params::source(&dag.pipeline, e, profile)
            ),
            format!("make it again: `pipeline run --force {}`", e.name),
        ),
        None => (
            format!(
                "{} is made by no stage of this pipeline: make it again with both classes in \
                 every part",
                dep.path
            ),
            format!(
                "{} is made by no stage of this pipeline: put it back",
                dep.path
            ),
        ),
    };
    Some(ElementsInput {
        dep,
        producer,
        fix,
        remake,
    })
}

/// The split and manifest checks of model stage `i` on its element set as
/// it is on disk now: what `run` checks before it submits the stage, the set
/// having perhaps just been made by this run.
pub fn element_set(ws: &Workspace, dag: &Dag, profile: &str, i: usize, params: &Value) -> Report {
    let mut r = Report::default();
    let spec = &dag.stages()[i];
    let Some(kind) = ModelKind::of(spec) else {
        return r;
    };
    let Some(input) = elements_input(dag, profile, spec, &mut r) else {
        return r;
    };
    let rules = match rules(kind, params) {
        Ok(rules) => rules,
        Err(e) => {
            r.fail(&spec.name, Area::Params, format!("{e:#}"));
            return r;
        }
    };
    if let Some(clips) = read_element_set(ws, &spec.name, &input.dep.path, &input.remake, &mut r) {
        check_split(&spec.name, &rules, &clips, &input.fix, &mut r);
    }
    r
}

/// Every string of `v` that is an absolute path, with its dotted key.
fn absolute_paths(v: &Value, key: &str, out: &mut Vec<(String, PathBuf)>) {
    match v {
        Value::String(s) if s.starts_with('/') => out.push((key.to_string(), PathBuf::from(s))),
        Value::Array(items) => {
            for (n, x) in items.iter().enumerate() {
                absolute_paths(x, &format!("{key}[{n}]"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                let key = if key.is_empty() || key.ends_with(':') {
                    format!("{key}{k}")
                } else {
                    format!("{key}.{k}")
                };
                absolute_paths(x, &key, out);
            }
        }
        _ => {}
    }
}

/// The files stage `i`'s parameters name: a relative `split.file` (elements)
/// or `cwd` (seedvc) under the workspace, and any absolute path anywhere in
/// the parameters or the split file.
fn check_param_files(
    ws: &Workspace,
    dag: &Dag,
    profile: &str,
    i: usize,
    params: &Value,
    r: &mut Report,
) {
    let spec = &dag.stages()[i];
    let source = params::source(&dag.pipeline, spec, profile);
    let mut named: Vec<(String, PathBuf)> = Vec::new();
    absolute_paths(params, "", &mut named);
    let mut relative = Vec::new();
    match CorpusKind::of(spec) {
        Some(CorpusKind::Elements) => {
            if let Some(f) = params.pointer("/split/file").and_then(Value::as_str) {
                relative.push(("split.file", f));
                let path = ws.root.join(f);
                if let Some(doc) = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                {
                    absolute_paths(&doc, &format!("{}:", path.display()), &mut named);
                }
            }
        }
        Some(CorpusKind::SeedVc) => {
            if let Some(f) = params.get("cwd").and_then(Value::as_str) {
                relative.push(("cwd", f));
            }
        }
        None => {}
    }
    let before = r.failures().count();
    let relative_keys: Vec<&str> = relative.iter().map(|(k, _)| *k).collect();
    for (key, f) in relative {
        let path = ws.root.join(f);
        if !path.exists() {
            r.fail(
                &spec.name,
                Area::Params,
                format!(
                    "parameter '{key}' names {}, which does not exist; create it, or change \
                     '{key}' in {source}",
                    path.display()
                ),
            );
        }
    }
    for (key, path) in named {
        // A relative parameter given as an absolute path is said above.
        if !path.exists() && !relative_keys.contains(&key.as_str()) {
            r.fail(
                &spec.name,
                Area::Params,
                format!(
                    "'{key}' names the absolute path {}, which does not exist on this machine; \
                     create it, or change it in {source}",
                    path.display()
                ),
            );
        }
    }
    if r.failures().count() == before {
        r.ok(
            &spec.name,
            Area::Params,
            "every file the parameters name exists".into(),
        );
    }
}

/// The run's stages as the check sees them.
struct Scope<'a> {
    ws: &'a Workspace,
    dag: &'a Dag,
    /// The stages that will (or may) run.
    runs: BTreeSet<usize>,
}

impl Scope<'_> {
    /// Whether the output at `path` is final now: it exists and no stage of
    /// this run makes it again.
    fn final_now(&self, path: &RelPath) -> bool {
        !producer(self.dag, path).is_some_and(|p| self.runs.contains(&p))
            && path.under(&self.ws.root).exists()
    }

    /// Every declared input of stage `i` exists or is made first.
    fn check_inputs(&self, i: usize, r: &mut Report) {
        let spec = &self.dag.stages()[i];
        let before = r.failures().count();
        for d in &spec.deps {
            if d.path.under(&self.ws.root).exists() {
                continue;
            }
            match producer(self.dag, &d.path) {
                None => r.fail(
                    &spec.name,
                    Area::Inputs,
                    format!(
                        "input '{}' ({}) does not exist and no stage makes it; create it in the \
                         workspace {}, or add the stage that makes it",
                        d.name,
                        d.path,
                        self.ws.root.display()
                    ),
                ),
                Some(p) if !self.runs.contains(&p) => r.fail(
                    &spec.name,
                    Area::Inputs,
                    format!(
                        "input '{}' ({}) does not exist, and {}, which makes it, is not part of \
                         this run: `pipeline run --until {}` makes it",
                        d.name,
                        d.path,
                        self.dag.stages()[p].name,
                        spec.name
                    ),
                ),
                Some(_) => {}
            }
        }
        if r.failures().count() == before {
            r.ok(
                &spec.name,
                Area::Inputs,
                format!(
                    "{} input(s): each exists or is made first in this run",
                    spec.deps.len()
                ),
            );
        }
    }

    /// Probes the corpus of an elements or seedvc stage `i` (what of it is
    /// final now) and, for an elements stage whose set a model stage of this
    /// run trains on, plans its clips and split. Returns those clips, when
    /// they can be planned now.
    async fn check_corpus(
        &self,
        planner: &mut Planner<'_>,
        i: usize,
        kind: CorpusKind,
        params: &Value,
        wants_split: bool,
        r: &mut Report,
    ) -> Result<Option<Vec<PlannedClip>>> {
        let spec = &self.dag.stages()[i];
        let name = spec.name.as_str();
        let mut now = Vec::new();
        let mut later = Vec::new();
        for d in kind.corpora(spec) {
            if self.final_now(&d.path) {
                now.push(d);
            } else {
                later.push(d);
            }
        }
        // The voice clones seedvc will make can be planned from RVRA alone.
        let clones_later = !later.is_empty()
            && later.iter().all(|d| {
                producer(self.dag, &d.path).is_some_and(|p| {
                    self.runs.contains(&p)
                        && CorpusKind::of(&self.dag.stages()[p]) == Some(CorpusKind::SeedVc)
                })
            });
        if now.is_empty() {
            r.note(
                name,
                Area::Corpus,
                format!(
                    "not checked: this run makes {} first (the stage itself names any bad video)",
                    later
                        .iter()
                        .map(|d| d.path.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return Ok(None);
        }
        let split = wants_split && (later.is_empty() || clones_later);
        let tolerance = kind.tolerance(params)?;
        let roots: Vec<PathBuf> = now.iter().map(|d| d.path.under(&self.ws.root)).collect();
        // The probe is memoized by content: the hashes the plan has just
        // made of these inputs spare it reading them.
        let mut known = BTreeMap::new();
        for (d, root) in now.iter().zip(&roots) {
            if let Some(h) = planner.hash(&d.path).await? {
                for e in &h.entries {
                    known.insert(
                        root.join(&e.rel).to_string_lossy().into_owned(),
                        e.hash.to_hex().to_string(),
                    );
                }
            }
        }
        let report = check_corpus_media(
            self.ws,
            name,
            &roots,
            &known,
            kind.categories(),
            split.then_some(params),
            split && clones_later,
        )?;
        let shown = now
            .iter()
            .map(|d| d.path.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let bad = report.bad.len();
        let seen = report.videos + report.bad.iter().filter(|b| !b.path.exists()).count();
        let over = bad as f64 > tolerance * seen.max(1) as f64;
        for b in &report.bad {
            let line = format!("{}: {}", b.path.display(), b.problem);
            if over {
                r.fail(name, Area::Corpus, line);
            } else {
                r.note(name, Area::Corpus, line);
            }
        }
        let memo = format!("{} probed, {} from the memo", report.probed, report.reused);
        if bad == 0 {
            r.ok(
                name,
                Area::Corpus,
                format!(
                    "{shown}: {} videos open with a video and an audio stream ({memo})",
                    report.videos
                ),
            );
        } else if over {
            r.fail(
                name,
                Area::Corpus,
                format!(
                    "{shown}: {bad} of {seen} videos cannot be used (above), more than its \
                     max_failed_fraction ({tolerance}) allows, so the stage would fail after \
                     reading all the others; repair or remove them ({memo})"
                ),
            );
        } else {
            r.ok(
                name,
                Area::Corpus,
                format!(
                    "{shown}: {bad} of {seen} videos cannot be used (above), within its \
                     max_failed_fraction ({tolerance}): the stage skips them ({memo})"
                ),
            );
        }
        if let Some(e) = &report.split_error {
            r.fail(name, Area::Split, e.clone());
        }
        Ok(report.clips.filter(|_| split))
    }
}

/// Runs `pipeline-media check-corpus` on `roots` for stage `stage`.
fn check_corpus_media(
    ws: &Workspace,
    stage: &str,
    roots: &[PathBuf],
    known: &BTreeMap<String, String>,
    categories: &[Category],
    elements_params: Option<&Value>,
    plan_voiceclones: bool,
) -> Result<CorpusReport> {
    let exe = crate::exec::step::program_exe("pipeline-media")?;
    let hashes = ws.state_dir().join(PROBE_HASHES);
    pipeline_core::util::write_atomic(&hashes, &serde_json::to_vec(known)?)
        .with_context(|| format!("writing {}", hashes.display()))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("check-corpus")
        .arg("--stage")
        .arg(stage)
        .arg("--workspace")
        .arg(&ws.root)
        .arg("--probe")
        .arg("--memo")
        .arg(ws.state_dir().join(PROBE_MEMO))
        .arg("--hashes")
        .arg(&hashes);
    for c in categories {
        cmd.arg("--category").arg(c.folder());
    }
    if let Some(p) = elements_params {
        cmd.arg("--elements-params").arg(p.to_string());
    }
    if plan_voiceclones {
        cmd.arg("--plan-voiceclones");
    }
    cmd.arg("--").args(roots);
    let out = cmd
        .output()
        .with_context(|| format!("starting {}", exe.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "stage {stage}: pipeline-media could not check the corpus: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout)
        .context("pipeline-media check-corpus answered something that is not its report")
}

/// Checks the stages of `sel` that would run (with `force`), as `run` would
/// run them under `profile`.
pub async fn check(
    ws: &Workspace,
    dag: &Dag,
    profile: &str,
    sel: &[usize],
    force: &BTreeSet<usize>,
) -> Result<Report> {
    let mut r = Report::default();
    let mut planner = Planner::new(ws, dag, profile);
    let mut runs = BTreeSet::new();
    for ev in evaluate_all(&mut planner, sel, force).await? {
        let name = &dag.stages()[ev.stage].name;
        match &ev.verdict {
            Verdict::Invalid { message } => r.fail(name, Area::Stage, message.clone()),
            // The stage above that cannot run is named on its own line.
            Verdict::Blocked { .. } => {}
            Verdict::Stale { .. } => {
                runs.insert(ev.stage);
            }
            Verdict::UpToDate { .. } | Verdict::Frozen => {
                r.ok(name, Area::Stage, "up to date: it will not run".into())
            }
        }
    }
    let scope = Scope { ws, dag, runs };
    let mut params: BTreeMap<usize, Value> = BTreeMap::new();
    for &i in &scope.runs {
        params.insert(i, planner.params(i)?);
    }
    for &i in &scope.runs {
        scope.check_inputs(i, &mut r);
        if matches!(dag.stages()[i].action, Action::Builtin { .. }) {
            check_param_files(ws, dag, profile, i, &params[&i], &mut r);
        }
    }
    // The element sets a model stage of this run trains on.
    let trained_on: Vec<&RelPath> = scope
        .runs
        .iter()
        .filter(|&&i| ModelKind::of(&dag.stages()[i]).is_some())
        .filter_map(|&i| dag.stages()[i].deps.iter().find(|d| d.name == "elements"))
        .map(|d| &d.path)
        .collect();
    let mut planned = BTreeMap::new();
    for &i in &scope.runs {
        let spec = &dag.stages()[i];
        let Some(kind) = CorpusKind::of(spec) else {
            continue;
        };
        let wants_split = kind == CorpusKind::Elements
            && spec
                .outs
                .iter()
                .any(|o| trained_on.iter().any(|t| o.path.overlaps(t)));
        planned.insert(
            i,
            scope
                .check_corpus(&mut planner, i, kind, &params[&i], wants_split, &mut r)
                .await?,
        );
    }
    for &i in &scope.runs {
        let spec = &dag.stages()[i];
        let Some(kind) = ModelKind::of(spec) else {
            continue;
        };
        let Some(input) = elements_input(dag, profile, spec, &mut r) else {
            continue;
        };
        let rules = rules(kind, &params[&i])?;
        match input.producer.filter(|p| scope.runs.contains(p)) {
            Some(p) => match planned.get(&p).and_then(Option::as_ref) {
                Some(clips) => check_split(&spec.name, &rules, clips, &input.fix, &mut r),
                None => r.note(
                    &spec.name,
                    Area::Split,
                    format!(
                        "checked on {} once {} has made it, before {} is submitted to Slurm",
                        input.dep.path,
                        dag.stages()[p].name,
                        spec.name
                    ),
                ),
            },
            None if input.dep.path.under(&ws.root).exists() => {
                if let Some(clips) =
                    read_element_set(ws, &spec.name, &input.dep.path, &input.remake, &mut r)
                {
                    check_split(&spec.name, &rules, &clips, &input.fix, &mut r);
                }
            }
            // Missing: said by the inputs check.
            None => {}
        }
    }
    // Each stage's lines together, in the order the stages run.
    r.findings.sort_by_key(|f| dag.index(&f.stage));
    Ok(r)
}

/// When `pipeline run` checks, and what: the policy of the run, in one place.
///
/// Only steps that go to Slurm are checked: there a step waits in a queue
/// and then holds a GPU for hours before a one-class validation set or a
/// missing file shows, while a local step that fails does so in front of its
/// user (who can run `pipeline check` too). Before the run's first
/// submission the whole check runs on the run's stages; a failure refuses
/// that submission and every later one. Before each model stage is
/// submitted, its element set, which this run may just have made, is
/// checked again on its manifest (reading it costs milliseconds).
/// `run --no-check` turns this off.
pub struct Preflight {
    enabled: bool,
    /// The run's selected stages and those it forces.
    sel: Vec<usize>,
    force: BTreeSet<usize>,
    checked: bool,
    refused: Option<String>,
}

impl Preflight {
    pub fn new(opts: &RunOptions, sel: &[usize], force: &BTreeSet<usize>) -> Preflight {
        Preflight {
            enabled: !opts.no_check,
            sel: sel.to_vec(),
            force: force.clone(),
            checked: false,
            refused: None,
        }
    }

    /// Whether stage `i`, about to be launched on `executor`, may go:
    /// `Some(why not)` refuses it. `planner` gives the run's parameters.
    pub async fn before_launch(
        &mut self,
        ws: &Workspace,
        dag: &Dag,
        planner: &mut Planner<'_>,
        i: usize,
        executor: ExecutorKind,
    ) -> Result<Option<String>> {
        if !self.enabled || executor != ExecutorKind::Slurm {
            return Ok(None);
        }
        if !self.checked {
            self.checked = true;
            let report = check(ws, dag, planner.profile, &self.sel, &self.force).await?;
            if !report.passed() {
                self.refused = Some(refusal(&report));
            }
        }
        if let Some(why) = &self.refused {
            return Ok(Some(why.clone()));
        }
        let params = planner.params(i)?;
        let report = element_set(ws, dag, planner.profile, i, &params);
        Ok((!report.passed()).then(|| refusal(&report)))
    }
}

/// The words a refused submission is recorded with.
fn refusal(report: &Report) -> String {
    let failures: Vec<String> = report.failures().map(|f| f.to_string()).collect();
    format!(
        "not submitted to Slurm: `pipeline check` found {} problem(s):\n  {}\n(fix them, or \
         `pipeline run --no-check` to submit anyway)",
        failures.len(),
        failures.join("\n  ")
    )
}
