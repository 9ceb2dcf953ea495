//! Planning: for each stage, is its recorded result still valid, and if not,
//! why not — in words a person acts on. See `fingerprint` for the rules.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;

use super::dag::Dag;
use super::envkey::EnvKey;
use super::fingerprint::Fingerprint;
use super::params::{self, ParamChange};
use super::paths::RelPath;
use super::pipeline::{Action, StageSpec};
use super::workspace::Workspace;
use crate::hash::Hashed;
use crate::store::{StepId, StepRecord};

/// Why a stage must run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// No successful step yet; `last_attempt` tells how the newest attempt ended.
    NeverRan {
        last_attempt: Option<String>,
    },
    Forced,
    AlwaysChanged,
    ParamsChanged {
        changes: Vec<ParamChange>,
    },
    InputChanged {
        path: String,
        changed: u64,
        added: u64,
        removed: u64,
        total: u64,
        is_dir: bool,
    },
    InputMissing {
        path: String,
    },
    InputsDeclared {
        old: Vec<String>,
        new: Vec<String>,
    },
    CodeChanged {
        old: String,
        new: String,
    },
    CommandChanged {
        old: String,
        new: String,
    },
    EnvChanged {
        var: String,
        old: Option<String>,
        new: Option<String>,
    },
    OutputsDeclared {
        old: Vec<String>,
        new: Vec<String>,
    },
    OutputMissing {
        path: String,
    },
    OutputModified {
        path: String,
    },
    Upstream {
        stages: Vec<String>,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NeverRan { last_attempt: None } => write!(f, "never ran"),
            Reason::NeverRan {
                last_attempt: Some(a),
            } => write!(f, "never succeeded: {a}"),
            Reason::Forced => write!(f, "forced (--force)"),
            Reason::AlwaysChanged => write!(f, "always_changed is set"),
            Reason::ParamsChanged { changes } => {
                let c: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
                write!(f, "params changed: {}", c.join(", "))
            }
            Reason::InputChanged {
                path,
                changed,
                added,
                removed,
                total,
                is_dir,
            } => {
                if !*is_dir {
                    return write!(f, "input {path} changed");
                }
                let mut parts = Vec::new();
                if *changed > 0 {
                    parts.push(format!("{changed} of {} files changed", group(*total)));
                }
                if *added > 0 {
                    parts.push(format!("{added} added"));
                }
                if *removed > 0 {
                    parts.push(format!("{removed} removed"));
                }
                if parts.is_empty() {
                    write!(f, "input {path} changed")
                } else {
                    write!(f, "input {path} changed ({})", parts.join(", "))
                }
            }
            Reason::InputMissing { path } => write!(f, "input {path} is missing"),
            Reason::InputsDeclared { old, new } => {
                write!(
                    f,
                    "declared inputs changed: [{}] -> [{}]",
                    old.join(", "),
                    new.join(", ")
                )
            }
            Reason::CodeChanged { old, new } => write!(f, "code version changed: {old} -> {new}"),
            Reason::CommandChanged { old, new } => write!(f, "command changed: `{old}` -> `{new}`"),
            // The store holds keyed hashes, never values: say only what
            // changed.
            Reason::EnvChanged { var, old, new } => match (old, new) {
                (None, Some(_)) => write!(f, "environment {var} changed (was unset)"),
                (Some(_), None) => write!(f, "environment {var} changed (now unset)"),
                _ => write!(f, "environment {var} changed"),
            },
            Reason::OutputsDeclared { old, new } => {
                write!(
                    f,
                    "declared outputs changed: [{}] -> [{}]",
                    old.join(", "),
                    new.join(", ")
                )
            }
            Reason::OutputMissing { path } => write!(f, "output {path} is missing"),
            Reason::OutputModified { path } => {
                write!(f, "output {path} was modified after it was written")
            }
            Reason::Upstream { stages } => write!(f, "upstream {} runs first", stages.join(", ")),
        }
    }
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The verdict on one stage.
#[derive(Debug, Clone)]
pub enum Verdict {
    UpToDate {
        step: StepId,
    },
    Stale {
        reasons: Vec<Reason>,
    },
    /// Frozen stages never run (DVC's `frozen: true`).
    Frozen,
    /// The stage cannot be evaluated (a parameters file is missing, say).
    Invalid {
        message: String,
    },
    /// An upstream stage cannot run (`by`: the invalid stages above it).
    Blocked {
        by: Vec<String>,
    },
}

impl Verdict {
    /// The stage's state as `status --json` names it: `up_to_date`, `frozen`,
    /// `stale` (it runs), `may_run` (it runs only if an upstream stage that
    /// runs first changes its output: early cutoff), `invalid` (it cannot
    /// run) or `blocked` (a stage above it cannot run).
    pub fn state(&self) -> &'static str {
        match self {
            Verdict::UpToDate { .. } => "up_to_date",
            Verdict::Frozen => "frozen",
            _ if self.may_run() => "may_run",
            Verdict::Stale { .. } => "stale",
            Verdict::Invalid { .. } => "invalid",
            Verdict::Blocked { .. } => "blocked",
        }
    }

    /// Whether the stage runs only if an upstream stage that runs first
    /// changes its output (its only reason is that upstream).
    pub fn may_run(&self) -> bool {
        matches!(self, Verdict::Stale { reasons } if upstream_only(reasons).is_some())
    }

    /// Why, one line per reason, as `status` and `--dry-run` say it.
    pub fn why(&self) -> Vec<String> {
        match self {
            Verdict::UpToDate { .. } | Verdict::Frozen => Vec::new(),
            Verdict::Stale { reasons } => match upstream_only(reasons) {
                Some(stages) => vec![if stages.len() == 1 {
                    format!("runs if upstream {} changes its output", stages[0])
                } else {
                    format!(
                        "runs if upstream {} change their outputs",
                        stages.join(", ")
                    )
                }],
                None => reasons.iter().map(|r| r.to_string()).collect(),
            },
            Verdict::Invalid { message } => vec![message.clone()],
            Verdict::Blocked { by } => {
                vec![format!("blocked by {}, which cannot run", by.join(", "))]
            }
        }
    }
}

/// The upstream stages when they are the only reason (the stage would
/// otherwise be up to date, as far as can be told before they run).
fn upstream_only(reasons: &[Reason]) -> Option<&[String]> {
    match reasons {
        [Reason::Upstream { stages }] => Some(stages),
        _ => None,
    }
}

/// A stage evaluated against the store and the workspace.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub stage: usize,
    pub verdict: Verdict,
    /// Complete only when every input exists.
    pub fingerprint: Option<Fingerprint>,
    pub key: Option<String>,
    pub inputs: Vec<(String, RelPath, Arc<Hashed>)>,
}

/// Evaluates stages, hashing each artifact at most once per planner.
pub struct Planner<'a> {
    pub ws: &'a Workspace,
    pub dag: &'a Dag,
    pub profile: &'a str,
    hashed: HashMap<RelPath, Option<Arc<Hashed>>>,
    /// Resolved params per stage (resolution reads files; do it once).
    params: HashMap<usize, serde_json::Value>,
}

impl<'a> Planner<'a> {
    pub fn new(ws: &'a Workspace, dag: &'a Dag, profile: &'a str) -> Self {
        Planner {
            ws,
            dag,
            profile,
            hashed: HashMap::new(),
            params: HashMap::new(),
        }
    }

    /// Forgets what was hashed under `path` (after a step rewrote it).
    pub fn invalidate(&mut self, path: &RelPath) {
        self.hashed.retain(|p, _| !p.overlaps(path));
    }

    async fn hash(&mut self, path: &RelPath) -> Result<Option<Arc<Hashed>>> {
        if let Some(h) = self.hashed.get(path) {
            return Ok(h.clone());
        }
        let h = self.ws.hash(path).await?.map(|(h, _)| Arc::new(h));
        self.hashed.insert(path.clone(), h.clone());
        Ok(h)
    }

    pub fn params(&mut self, i: usize) -> Result<serde_json::Value> {
        if let Some(p) = self.params.get(&i) {
            return Ok(p.clone());
        }
        let spec = &self.dag.stages()[i];
        let p = params::resolve(&self.dag.pipeline, spec, self.profile, &self.ws.root)?;
        // A built-in kind reads its parameters as it will when the step runs,
        // so a bad one is reported now, not after the stages above have run.
        if let Action::Builtin { kind } = &spec.action {
            crate::stages::check_params(kind, &p).map_err(|e| {
                anyhow::anyhow!(
                    "stage '{}' ({kind}): {}: {e:#}",
                    spec.name,
                    params::source(&self.dag.pipeline, spec, self.profile)
                )
            })?;
        }
        self.params.insert(i, p.clone());
        Ok(p)
    }

    /// Evaluates stage `i`. `upstream_pending` names upstream stages that will
    /// run first (their outputs are not final yet); `force` adds "forced".
    pub async fn evaluate(
        &mut self,
        i: usize,
        upstream_pending: &[String],
        force: bool,
    ) -> Result<Evaluation> {
        let spec = &self.dag.stages()[i];
        let params = self.params(i)?;
        let mut reasons = Vec::new();
        let mut inputs = Vec::new();
        let mut complete = true;
        for d in &spec.deps {
            match self.hash(&d.path).await? {
                Some(h) => inputs.push((d.name.clone(), d.path.clone(), h)),
                None => {
                    complete = false;
                    if upstream_pending.is_empty() {
                        reasons.push(Reason::InputMissing {
                            path: d.path.to_string(),
                        });
                    }
                }
            }
        }
        let fp = complete.then(|| fingerprint(spec, &params, &inputs, &self.ws.env_key));
        let key = fp.as_ref().map(Fingerprint::key);
        let last = self.ws.store.latest_success(&spec.name).await?;
        if spec.frozen && last.is_some() {
            return Ok(Evaluation {
                stage: i,
                verdict: Verdict::Frozen,
                fingerprint: fp,
                key,
                inputs,
            });
        }
        if !upstream_pending.is_empty() {
            reasons.push(Reason::Upstream {
                stages: upstream_pending.to_vec(),
            });
        }
        if force {
            reasons.push(Reason::Forced);
        }
        if spec.always_changed {
            reasons.push(Reason::AlwaysChanged);
        }
        match &last {
            None => {
                let last_attempt = self
                    .ws
                    .store
                    .latest_step(&spec.name)
                    .await?
                    .filter(|s| s.status.is_finished())
                    .map(|s| match s.error {
                        Some(e) => format!("step {} {} ({e})", s.id, s.status),
                        None => format!("step {} {}", s.id, s.status),
                    });
                reasons.push(Reason::NeverRan { last_attempt })
            }
            Some(last) => {
                if let Some(fp) = &fp {
                    reasons.extend(self.compare(spec, last, fp, &inputs).await?);
                } else {
                    reasons.extend(self.compare_partial(spec, last, &params));
                }
                if reasons.is_empty() {
                    reasons.extend(self.check_outputs(last.id).await?);
                }
            }
        }
        let verdict = match (reasons.is_empty(), &last) {
            (true, Some(last)) => Verdict::UpToDate { step: last.id },
            _ => Verdict::Stale { reasons },
        };
        Ok(Evaluation {
            stage: i,
            verdict,
            fingerprint: fp,
            key,
            inputs,
        })
    }

    /// Differences that need no input hashes (inputs not there yet).
    fn compare_partial(
        &self,
        spec: &StageSpec,
        last: &StepRecord,
        params: &serde_json::Value,
    ) -> Vec<Reason> {
        let mut r = Vec::new();
        let old: serde_json::Value = serde_json::from_str(&last.params_json).unwrap_or_default();
        let changes = params::diff(&old, params);
        if !changes.is_empty() {
            r.push(Reason::ParamsChanged { changes });
        }
        let (code, cmd) = code_of(spec);
        if last.code_version != code {
            r.push(Reason::CodeChanged {
                old: last.code_version.clone(),
                new: code,
            });
        }
        if let (Some(old), Some(new)) = (&last.command, &cmd) {
            if old != new {
                r.push(Reason::CommandChanged {
                    old: old.clone(),
                    new: new.clone(),
                });
            }
        }
        r
    }

    async fn compare(
        &self,
        spec: &StageSpec,
        last: &StepRecord,
        fp: &Fingerprint,
        inputs: &[(String, RelPath, Arc<Hashed>)],
    ) -> Result<Vec<Reason>> {
        if last.fingerprint == fp.key() || last.fingerprint == legacy_key(fp) {
            return Ok(Vec::new());
        }
        let mut r = self.compare_partial(spec, last, &fp.params);
        let old_inputs = self.ws.store.step_inputs(last.id).await?;
        let old_names: Vec<String> = old_inputs.iter().map(|p| p.artifact.path.clone()).collect();
        let mut new_names: Vec<String> = inputs.iter().map(|(_, p, _)| p.to_string()).collect();
        new_names.sort();
        let mut old_sorted = old_names.clone();
        old_sorted.sort();
        if old_sorted != new_names {
            r.push(Reason::InputsDeclared {
                old: old_sorted,
                new: new_names,
            });
        }
        for (name, path, h) in inputs {
            let Some(old) = old_inputs.iter().find(|p| p.name == *name) else {
                continue;
            };
            let new_hash = h.hash.to_hex();
            if old.artifact.hash == new_hash.as_str() {
                continue;
            }
            let (mut changed, mut added, mut removed) = (0, 0, 0);
            if h.is_dir && old.artifact.is_dir {
                if let Some(tree) = self.ws.store.tree(&old.artifact.hash).await? {
                    let old_map: HashMap<&str, &blake3::Hash> =
                        tree.iter().map(|t| (t.rel.as_str(), &t.hash)).collect();
                    for e in &h.entries {
                        match old_map.get(e.rel.as_str()) {
                            None => added += 1,
                            Some(oh) if **oh != e.hash => changed += 1,
                            _ => {}
                        }
                    }
                    let new_set: std::collections::HashSet<&str> =
                        h.entries.iter().map(|e| e.rel.as_str()).collect();
                    removed = tree
                        .iter()
                        .filter(|t| !new_set.contains(t.rel.as_str()))
                        .count() as u64;
                }
            }
            r.push(Reason::InputChanged {
                path: path.to_string(),
                changed,
                added,
                removed,
                total: h.file_count(),
                is_dir: h.is_dir,
            });
        }
        let old_env: BTreeMap<String, Option<String>> =
            serde_json::from_str(&last.env_json).unwrap_or_default();
        for (var, new) in &fp.env {
            let old = old_env
                .get(var)
                .cloned()
                .flatten()
                .map(|v| self.ws.env_key.as_digest(&v));
            if old != *new {
                r.push(Reason::EnvChanged {
                    var: var.clone(),
                    old,
                    new: new.clone(),
                });
            }
        }
        let old_outs: Vec<(String, String)> =
            serde_json::from_str(&last.outs_json).unwrap_or_default();
        if old_outs != fp.outs {
            r.push(Reason::OutputsDeclared {
                old: old_outs.into_iter().map(|o| o.1).collect(),
                new: fp.outs.iter().map(|o| o.1.clone()).collect(),
            });
        }
        if r.is_empty() {
            // Keys differ but no component we can name does: the stage's identity changed.
            r.push(Reason::CodeChanged {
                old: last.fingerprint[..12].to_string(),
                new: fp.key()[..12].to_string(),
            });
        }
        Ok(r)
    }

    async fn check_outputs(&mut self, step: StepId) -> Result<Vec<Reason>> {
        let mut r = Vec::new();
        for o in self.ws.store.step_outputs(step).await? {
            let path = match RelPath::parse(&o.artifact.path) {
                Ok(p) => p,
                Err(_) => continue,
            };
            match self.hash(&path).await? {
                None => r.push(Reason::OutputMissing {
                    path: o.artifact.path.clone(),
                }),
                Some(h) if h.hash.to_hex().as_str() != o.artifact.hash => {
                    r.push(Reason::OutputModified {
                        path: o.artifact.path.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        Ok(r)
    }
}

/// The code version and command line of a stage.
pub fn code_of(spec: &StageSpec) -> (String, Option<String>) {
    match &spec.action {
        Action::Builtin { kind } => {
            let v = crate::stages::kind_info(kind).map_or(0, |k| k.version);
            (format!("{kind}@{v}"), None)
        }
        Action::Command { cmd, wdir } => (
            "cmd".to_string(),
            Some(match wdir {
                Some(w) => format!("(cd {w}) {cmd}"),
                None => cmd.clone(),
            }),
        ),
    }
}

/// The fingerprint of `spec` with these params and input hashes.
pub fn fingerprint(
    spec: &StageSpec,
    params: &serde_json::Value,
    inputs: &[(String, RelPath, Arc<Hashed>)],
    env_key: &EnvKey,
) -> Fingerprint {
    let (code_version, command) = code_of(spec);
    let mut ins: Vec<(String, String, String)> = inputs
        .iter()
        .map(|(n, p, h)| (n.clone(), p.to_string(), h.hash.to_hex().to_string()))
        .collect();
    ins.sort();
    Fingerprint {
        stage: spec.name.clone(),
        kind: spec.kind_name().to_string(),
        code_version,
        command,
        params: params.clone(),
        inputs: ins,
        outs: spec
            .outs
            .iter()
            .map(|o| (o.name.clone(), o.path.to_string()))
            .collect(),
        env: spec
            .env
            .iter()
            .map(|v| (v.clone(), std::env::var(v).ok().map(|x| env_key.digest(&x))))
            .collect(),
    }
}

/// The key `fp` had before environment values were hashed (they entered it
/// as they were), so a step recorded then is still up to date when its
/// variables hold the same values now. Only for stages that declare any.
fn legacy_key(fp: &Fingerprint) -> String {
    if fp.env.is_empty() {
        return fp.key();
    }
    let mut raw = fp.clone();
    raw.env = fp
        .env
        .keys()
        .map(|v| (v.clone(), std::env::var(v).ok()))
        .collect();
    raw.key()
}
