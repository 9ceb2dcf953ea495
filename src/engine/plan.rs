//! Planning: for each stage, is its recorded result still valid, and if not,
//! why not — in words a person acts on. See `fingerprint` for the rules.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;

use super::dag::Dag;
use super::envkey::EnvKey;
use super::fingerprint::Fingerprint;
pub use super::fingerprint::Reason;
use super::params;
use super::pipeline::{Action, StageSpec};
use super::workspace::Workspace;
use crate::hash::Hashed;
use crate::relpath::RelPath;
use crate::store::{StepId, StepRecord};

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

    /// The artifact at `path` hashed (through the stat cache), once per planner.
    pub async fn hash(&mut self, path: &RelPath) -> Result<Option<Arc<Hashed>>> {
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
            let outputs: Vec<&str> = spec.outs.iter().map(|o| o.name.as_str()).collect();
            crate::stages::check_stage(kind, &p, &outputs).map_err(|e| {
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
                    reasons.extend(self.compare(last, fp, &inputs).await?);
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
        let (code_version, command) = code_of(spec);
        let now = Fingerprint {
            stage: spec.name.clone(),
            kind: spec.kind_name().to_string(),
            code_version,
            command,
            params: params.clone(),
            inputs: Vec::new(),
            outs: Vec::new(),
            env: Default::default(),
        };
        now.compare_code_and_params(&Fingerprint::recorded(last, &[], &self.ws.env_key))
    }

    /// Why `fp` differs from the fingerprint `last` was recorded with:
    /// [`Fingerprint::compare`], with each changed folder's files counted
    /// against the recorded tree.
    async fn compare(
        &self,
        last: &StepRecord,
        fp: &Fingerprint,
        inputs: &[(String, RelPath, Arc<Hashed>)],
    ) -> Result<Vec<Reason>> {
        if last.fingerprint == fp.key() || last.fingerprint == legacy_key(fp) {
            return Ok(Vec::new());
        }
        let old_inputs = self.ws.store.step_inputs(last.id).await?;
        let old = Fingerprint::recorded(last, &old_inputs, &self.ws.env_key);
        let mut r = fp.compare(&old, &last.fingerprint);
        for reason in &mut r {
            let Reason::InputChanged {
                path,
                changed,
                added,
                removed,
                total,
                is_dir,
            } = reason
            else {
                continue;
            };
            let Some((_, _, h)) = inputs.iter().find(|(_, p, _)| p.as_str() == path) else {
                continue;
            };
            (*total, *is_dir) = (h.file_count(), h.is_dir);
            let Some(old) = old_inputs.iter().find(|o| o.artifact.path.as_str() == path) else {
                continue;
            };
            if !(h.is_dir && old.artifact.is_dir) {
                continue;
            }
            if let Some(tree) = self.ws.store.tree(&old.artifact.hash).await? {
                let old_map: HashMap<&str, &blake3::Hash> =
                    tree.iter().map(|t| (t.rel.as_str(), &t.hash)).collect();
                for e in &h.entries {
                    match old_map.get(e.rel.as_str()) {
                        None => *added += 1,
                        Some(oh) if **oh != e.hash => *changed += 1,
                        _ => {}
                    }
                }
                let new_set: std::collections::HashSet<&str> =
                    h.entries.iter().map(|e| e.rel.as_str()).collect();
                *removed = tree
                    .iter()
                    .filter(|t| !new_set.contains(t.rel.as_str()))
                    .count() as u64;
            }
        }
        Ok(r)
    }

    async fn check_outputs(&mut self, step: StepId) -> Result<Vec<Reason>> {
        let mut r = Vec::new();
        for o in self.ws.store.step_outputs(step).await? {
            match self.hash(&o.artifact.path).await? {
                None => r.push(Reason::OutputMissing {
                    path: o.artifact.path.to_string(),
                }),
                Some(h) if h.hash.to_hex().as_str() != o.artifact.hash => {
                    r.push(Reason::OutputModified {
                        path: o.artifact.path.to_string(),
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
