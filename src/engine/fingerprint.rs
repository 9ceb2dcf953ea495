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
//! The key alone cannot say what changed, so every component is recorded with
//! the step (params JSON, code version, command, env, inputs with their
//! artifact versions). `crate::engine::plan` compares the current
//! fingerprint with the recorded one component by component and words each
//! difference for a person: "params changed: lr 0.0001 -> 3e-5", "input
//! data/elements changed (3 of 12,000 files)", "code version changed:
//! stage1@1 -> stage1@2", "output models/stage1 was modified after it was
//! written", "never ran". A stage whose upstream will rerun is re-evaluated
//! once that upstream has finished: if the upstream wrote identical bytes,
//! the downstream key is unchanged and it does not run (early cut-off).

use std::collections::BTreeMap;

use serde::Serialize;

/// Every component of a step key, in the order they are hashed.
#[derive(Debug, Clone, Serialize)]
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
}
