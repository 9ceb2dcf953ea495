//! Step fingerprints: when is a stage's recorded result still valid?
//!
//! # What goes into the key
//!
//! A step's key is BLAKE3 over the canonical JSON of [`Fingerprint`]:
//!
//! - the stage's name and kind;
//! - the implementation's version: for a built-in kind, `KIND@N`, where `N`
//!   is a constant in the stage's code, bumped whenever the stage would write
//!   different bytes for the same inputs; for a command stage, the command
//!   line itself (a changed command is changed code);
//! - the resolved parameters, every one of them, seeds included, as JSON with
//!   sorted keys (so reordering a profile file changes nothing);
//! - the content hash (BLAKE3; folders as a Merkle root, see `crate::hash`)
//!   of every declared input, with the input's name and path;
//! - the declared outputs (names and paths): writing elsewhere is a new result;
//! - the environment variables the stage declares relevant (`env:` in the
//!   manifest), each as a keyed hash of its value, never the value
//!   ([`super::envkey`]); an unset variable is recorded as unset.
//!
//! # What stays out, and why
//!
//! Resources (CPUs, memory, GPUs, time limit), the executor (local or Slurm),
//! the host and the time: where and when a step ran does not change what it
//! produced. Input *paths* outside the declared ones, file modes and mtimes:
//! only content counts, so `touch` reruns nothing.
//!
//! # When a step is up to date
//!
//! A stage is up to date when its newest successful step has the same key
//! and every output that step recorded is on disk with the recorded hash.
//! Checking that reads no file data: the stat cache (`crate::hash::statcache`)
//! holds (device, inode, size, mtime_ns, ctime_ns) -> hash for every file of
//! every artifact, and only a file whose stat differs is read again.
//!
//! # When it is not, saying why
//!
//! The key alone cannot say what changed, so the fingerprint is recorded
//! whole with the step: every component in its step row (params JSON, code
//! version, command, env digests, outputs) and the inputs with their
//! artifact versions; [`Fingerprint::recorded`] puts it back together. As
//! cargo does with its fingerprints, [`Fingerprint::compare`] compares the
//! current fingerprint with the recorded one component by component and
//! words each difference for a person: "params changed: lr 0.0001 -> 3e-5", "input
//! data/elements changed (3 of 12,000 files)", "code version changed:
//! stage1@1 -> stage1@2", "output models/stage1 was modified after it was
//! written", "never ran". A stage whose upstream will rerun is re-evaluated
//! once that upstream has finished: if the upstream wrote identical bytes,
//! the downstream key is unchanged and it does not run (early cut-off).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::envkey::EnvKey;
use super::params::{self, ParamChange};
use crate::store::{Port, StepRecord};

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

/// Every component of a step key, in the order they are hashed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fingerprint {
    pub stage: String,
    pub kind: String,
    pub code_version: String,
    pub command: Option<String>,
    pub params: serde_json::Value,
    /// (name, path, content hash), sorted by name.
    pub inputs: Vec<(String, String, String)>,
    /// (name, path), in declaration order.
    pub outs: Vec<(String, String)>,
    pub env: BTreeMap<String, Option<String>>,
}

impl Fingerprint {
    /// The hex BLAKE3 key.
    pub fn key(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"pipeline-fingerprint-v1\0");
        h.update(&serde_json::to_vec(self).expect("a fingerprint is plain data"));
        h.finalize().to_hex().to_string()
    }

    /// The fingerprint `step` was recorded with, from its row and its
    /// recorded inputs. Environment values recorded before they were hashed
    /// come back as their digests.
    pub fn recorded(step: &StepRecord, inputs: &[Port], env_key: &EnvKey) -> Fingerprint {
        let env: BTreeMap<String, Option<String>> =
            serde_json::from_str(&step.env_json).unwrap_or_default();
        let mut ins: Vec<(String, String, String)> = inputs
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.artifact.path.to_string(),
                    p.artifact.hash.clone(),
                )
            })
            .collect();
        ins.sort();
        Fingerprint {
            stage: step.stage.clone(),
            kind: step.kind.clone(),
            code_version: step.code_version.clone(),
            command: step.command.clone(),
            params: serde_json::from_str(&step.params_json).unwrap_or_default(),
            inputs: ins,
            outs: serde_json::from_str(&step.outs_json).unwrap_or_default(),
            env: env
                .into_iter()
                .map(|(k, v)| (k, v.map(|v| env_key.as_digest(&v))))
                .collect(),
        }
    }

    /// What differs in parameters, code version and command (what can be
    /// told before the inputs exist).
    pub fn compare_code_and_params(&self, old: &Fingerprint) -> Vec<Reason> {
        let mut r = Vec::new();
        let changes = params::diff(&old.params, &self.params);
        if !changes.is_empty() {
            r.push(Reason::ParamsChanged { changes });
        }
        if old.code_version != self.code_version {
            r.push(Reason::CodeChanged {
                old: old.code_version.clone(),
                new: self.code_version.clone(),
            });
        }
        if let (Some(o), Some(n)) = (&old.command, &self.command) {
            if o != n {
                r.push(Reason::CommandChanged {
                    old: o.clone(),
                    new: n.clone(),
                });
            }
        }
        r
    }

    /// Every difference from `old`, recorded under the key `old_key`, one
    /// reason per component, in the order a person reads them; empty when
    /// this fingerprint's key is `old_key`. A changed input is told by its
    /// path (the planner adds how many of a folder's files changed). Keys
    /// that differ with no component to name say so as a changed code
    /// identity.
    pub fn compare(&self, old: &Fingerprint, old_key: &str) -> Vec<Reason> {
        let mut r = self.compare_code_and_params(old);
        let paths = |f: &Fingerprint| {
            let mut v: Vec<String> = f.inputs.iter().map(|i| i.1.clone()).collect();
            v.sort();
            v
        };
        let (old_paths, new_paths) = (paths(old), paths(self));
        if old_paths != new_paths {
            r.push(Reason::InputsDeclared {
                old: old_paths,
                new: new_paths,
            });
        }
        for (name, path, hash) in &self.inputs {
            let Some(o) = old.inputs.iter().find(|o| o.0 == *name) else {
                continue;
            };
            if o.2 != *hash {
                r.push(Reason::InputChanged {
                    path: path.clone(),
                    changed: 0,
                    added: 0,
                    removed: 0,
                    total: 0,
                    is_dir: false,
                });
            }
        }
        for (var, new) in &self.env {
            let old = old.env.get(var).cloned().flatten();
            if old != *new {
                r.push(Reason::EnvChanged {
                    var: var.clone(),
                    old,
                    new: new.clone(),
                });
            }
        }
        if old.outs != self.outs {
            r.push(Reason::OutputsDeclared {
                old: old.outs.iter().map(|o| o.1.clone()).collect(),
                new: self.outs.iter().map(|o| o.1.clone()).collect(),
            });
        }
        if r.is_empty() {
            let key = self.key();
            if key != old_key {
                r.push(Reason::CodeChanged {
                    old: old_key.chars().take(12).collect(),
                    new: key[..12].to_string(),
                });
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fp() -> Fingerprint {
        Fingerprint {
            stage: "s".into(),
            kind: "cmd".into(),
            code_version: "cmd".into(),
            command: Some("echo".into()),
            params: json!({"a": 1, "b": 2}),
            inputs: vec![("in".into(), "in".into(), "00".into())],
            outs: vec![("out".into(), "out".into())],
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn key_follows_every_component_but_not_key_order() {
        let base = fp().key();
        let mut reordered = fp();
        reordered.params = serde_json::from_str(r#"{"b": 2, "a": 1}"#).unwrap();
        assert_eq!(reordered.key(), base);
        let mut p = fp();
        p.params = json!({"a": 1, "b": 3});
        assert_ne!(p.key(), base);
        let mut i = fp();
        i.inputs[0].2 = "01".into();
        assert_ne!(i.key(), base);
        let mut c = fp();
        c.command = Some("echo 2".into());
        assert_ne!(c.key(), base);
        let mut e = fp();
        e.env.insert("SEED".into(), None);
        assert_ne!(e.key(), base);
    }

    fn words(r: &[Reason]) -> Vec<String> {
        r.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn compare_names_each_changed_component() {
        let old = fp();
        let key = old.key();
        assert!(fp().compare(&old, &key).is_empty());
        let mut reordered = fp();
        reordered.params = serde_json::from_str(r#"{"b": 2, "a": 1}"#).unwrap();
        assert!(reordered.compare(&old, &key).is_empty());
        let mut new = fp();
        new.params = json!({"a": 1, "b": 3});
        new.command = Some("echo 2".into());
        new.inputs[0].2 = "01".into();
        new.env.insert("TOKEN".into(), Some("digest".into()));
        new.outs.push(("log".into(), "log.txt".into()));
        assert_eq!(
            words(&new.compare(&old, &key)),
            [
                "params changed: b 2 -> 3",
                "command changed: `echo` -> `echo 2`",
                "input in changed",
                "environment TOKEN changed (was unset)",
                "declared outputs changed: [out] -> [out, log.txt]",
            ]
        );
        let mut moved = fp();
        moved.inputs[0].1 = "elsewhere".into();
        moved.code_version = "stage2@4".into();
        assert_eq!(
            words(&moved.compare(&old, &key)),
            [
                "code version changed: cmd -> stage2@4",
                "declared inputs changed: [in] -> [elsewhere]"
            ]
        );
        // Keys differ with no component to name: the identity changed.
        let mut renamed = fp();
        renamed.stage = "t".into();
        let r = renamed.compare(&old, &key);
        assert_eq!(r.len(), 1);
        assert!(matches!(&r[0], Reason::CodeChanged { .. }), "{r:?}");
        // The same components under a key recorded some other way (an older
        // key formula): told as a changed identity too, never as up to date.
        let r = fp().compare(&old, "0123456789abcdef");
        assert_eq!(
            words(&r)[0],
            format!("code version changed: 0123456789ab -> {}", &key[..12])
        );
    }

    /// What a step row holds reassembles into the fingerprint it was keyed by.
    #[test]
    fn a_recorded_step_gives_back_its_fingerprint() {
        use crate::store::{Artifact, StepId, StepStatus};
        let dir = tempfile::tempdir().unwrap();
        let env_key = EnvKey::load_or_create(dir.path()).unwrap();
        let mut want = fp();
        want.env.insert("SEED".into(), Some(env_key.digest("7")));
        let step = StepRecord {
            id: StepId(1),
            run_id: 1,
            stage: want.stage.clone(),
            kind: want.kind.clone(),
            fingerprint: want.key(),
            code_version: want.code_version.clone(),
            command: want.command.clone(),
            params_json: want.params.to_string(),
            // Recorded before values were hashed: the value itself.
            env_json: r#"{"SEED":"7"}"#.into(),
            outs_json: serde_json::to_string(&want.outs).unwrap(),
            status: StepStatus::Succeeded,
            reason: None,
            error: None,
            exit_code: Some(0),
            executor: "local".into(),
            host: None,
            pid: None,
            pid_start: None,
            slurm_job_id: None,
            slurm_state: None,
            attempts: 1,
            slurm_requeues: 0,
            queued_at: 0,
            started_at: None,
            finished_at: None,
            peak_rss_kb: None,
        };
        let port = Port {
            name: "in".into(),
            artifact: Artifact {
                id: 1,
                path: crate::relpath::RelPath::parse("in").unwrap(),
                hash: "00".into(),
                size: 1,
                file_count: 1,
                is_dir: false,
                recorded_at: 0,
                step_id: None,
            },
        };
        let got = Fingerprint::recorded(&step, &[port], &env_key);
        assert_eq!(got, want);
        assert_eq!(got.key(), step.fingerprint);
    }
}
