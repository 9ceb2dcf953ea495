//! What made a step's inputs, back to the sources: the engine reads it from
//! the store when it queues a step of a kind that shows it (the report) and
//! hands it over in `job.json`, so a compute node never reads the store.
//!
//! Only what the inputs' bytes determine is kept (stages, kinds, code
//! versions, parameters, paths and BLAKE3 hashes): no step ids, hosts or
//! times, so that the same DAG run on another executor gives the same bytes.

use serde::{Deserialize, Serialize};

/// One artifact version a step read or wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvArtifact {
    /// The name the stage declared it under.
    pub name: String,
    /// Workspace-relative path.
    pub path: String,
    /// BLAKE3 (hex) of the version.
    pub hash: String,
}

/// One recorded step upstream of the inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvStep {
    pub stage: String,
    pub kind: String,
    /// `KIND@VERSION` of a built-in kind, or the hash of a command.
    pub code_version: String,
    pub params: serde_json::Value,
    pub inputs: Vec<ProvArtifact>,
    pub outputs: Vec<ProvArtifact>,
}

/// Whether the engine hands steps of `kind` their inputs' provenance.
pub fn wanted_by(kind: &str) -> bool {
    kind == "report"
}
