//! Lineage: what produced an artifact, from which inputs, parameters and
//! code, recursively (or, downstream, what was made from it); and `verify`,
//! which re-reads every recorded artifact and says which changed since.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Result};
use serde::Serialize;

use super::workspace::Workspace;
use crate::hash;
use crate::relpath::RelPath;
use crate::stages::provenance::{ProvArtifact, ProvStep};
use crate::store::{Artifact, StepId, StepRecord};

/// An artifact version in a lineage tree.
#[derive(Debug, Serialize)]
pub struct Node {
    pub name: Option<String>,
    pub path: String,
    pub hash: String,
    pub size: i64,
    pub file_count: i64,
    pub is_dir: bool,
    pub recorded_at: i64,
    /// The step that wrote this version; `None` for a source the pipeline did not make.
    pub produced_by: Option<StepNode>,
    /// Downstream mode: the steps that read this version.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consumed_by: Vec<StepNode>,
    /// What is on disk at `path` now, against this recorded version.
    pub now: Now,
}

/// What is on disk now at a recorded path, checked when lineage is asked
/// (through the stat cache: only files whose size or time changed are read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Now {
    /// The bytes are the recorded ones.
    Unchanged,
    /// Something else is there now.
    Changed { hash: String },
    /// Nothing is there now.
    Missing,
}

#[derive(Debug, Serialize)]
pub struct StepNode {
    pub step: i64,
    pub stage: String,
    pub kind: String,
    pub code_version: String,
    pub command: Option<String>,
    pub params: serde_json::Value,
    pub env: serde_json::Value,
    pub host: Option<String>,
    pub executor: String,
    pub slurm_job_id: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub peak_rss_kb: Option<i64>,
    /// Upstream mode: inputs; downstream mode: outputs.
    pub artifacts: Vec<Node>,
    /// Already shown elsewhere in this tree.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub repeated: bool,
}

/// What `lineage PATH` found.
#[derive(Debug, Serialize)]
pub struct Lineage {
    /// Set when PATH is a file inside a recorded folder: the folder's path.
    pub within: Option<String>,
    /// The file's hash in the recorded folder; `None` when the recorded
    /// folder did not hold it (it was added since).
    pub file_hash: Option<String>,
    /// Within a folder: the file on disk now, against `file_hash`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_now: Option<Now>,
    /// What was made from the artifact (`--downstream`) rather than what made it.
    pub downstream: bool,
    pub root: Node,
}

/// Resolves `path` (workspace-relative, or absolute inside the workspace) to a
/// recorded artifact, and builds its tree.
pub async fn lineage(ws: &Workspace, path: &str, downstream: bool) -> Result<Lineage> {
    let rel = relative(ws, path)?;
    let mut probe = Some(rel.clone());
    while let Some(p) = probe {
        if let Some(a) = ws.store.latest_artifact(p.as_str()).await? {
            let (within, file_hash, file_now) = if p == rel {
                (None, None, None)
            } else {
                let inner = &rel.as_str()[p.as_str().len() + 1..];
                let fh = ws
                    .store
                    .tree(&a.hash)
                    .await?
                    .and_then(|t| t.into_iter().find(|f| f.rel == inner))
                    .map(|f| f.hash.to_hex().to_string());
                let abs = rel.under(&ws.root);
                let disk = tokio::task::spawn_blocking(move || hash::hash_path(&abs, None))
                    .await??
                    .map(|(h, _)| h.hash.to_hex().to_string());
                let now = match (&fh, disk) {
                    (None, None) => bail!(
                        "{path}: no such file, now or in the recorded version of {p} \
                         (`pipeline lineage {p}` shows the folder)"
                    ),
                    (_, None) => Now::Missing,
                    (Some(r), Some(d)) if *r == d => Now::Unchanged,
                    (_, Some(d)) => Now::Changed { hash: d },
                };
                (Some(p.to_string()), fh, Some(now))
            };
            let mut seen = HashSet::new();
            let mut root = if downstream {
                down(ws, a, None, &mut seen).await?
            } else {
                up(ws, a, None, &mut seen).await?
            };
            check_now(ws, &mut root, &mut HashMap::new()).await?;
            return Ok(Lineage {
                within,
                file_hash,
                file_now,
                downstream,
                root,
            });
        }
        probe = p
            .as_str()
            .rsplit_once('/')
            .and_then(|(parent, _)| RelPath::parse(parent).ok());
    }
    bail!("{path}: no recorded artifact at or above this path; `pipeline status` lists what the pipeline makes")
}

fn relative(ws: &Workspace, path: &str) -> Result<RelPath> {
    let p = std::path::Path::new(path);
    let s = if p.is_absolute() {
        let canon = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        match canon.strip_prefix(&ws.root) {
            Ok(r) => r.to_string_lossy().into_owned(),
            Err(_) => bail!("{path} is outside the workspace {}", ws.root.display()),
        }
    } else {
        path.to_string()
    };
    RelPath::parse(&s).map_err(|e| anyhow::anyhow!(e))
}

fn node(a: &Artifact, name: Option<String>) -> Node {
    Node {
        name,
        path: a.path.to_string(),
        hash: a.hash.clone(),
        size: a.size,
        file_count: a.file_count,
        is_dir: a.is_dir,
        recorded_at: a.recorded_at,
        produced_by: None,
        consumed_by: Vec::new(),
        now: Now::Unchanged,
    }
}

/// Fills in what is on disk now for every node of a tree, hashing each path
/// once (through the stat cache).
fn check_now<'a>(
    ws: &'a Workspace,
    n: &'a mut Node,
    disk: &'a mut HashMap<String, Option<String>>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>> {
    Box::pin(async move {
        if !disk.contains_key(&n.path) {
            let rel = RelPath::parse(&n.path).map_err(|e| anyhow::anyhow!(e))?;
            let h = ws
                .hash(&rel)
                .await?
                .map(|(h, _)| h.hash.to_hex().to_string());
            disk.insert(n.path.clone(), h);
        }
        n.now = match &disk[&n.path] {
            None => Now::Missing,
            Some(h) if *h == n.hash => Now::Unchanged,
            Some(h) => Now::Changed { hash: h.clone() },
        };
        let steps = n.produced_by.iter_mut().chain(n.consumed_by.iter_mut());
        for st in steps {
            for a in st.artifacts.iter_mut() {
                check_now(ws, a, disk).await?;
            }
        }
        Ok(())
    })
}

fn step_node(s: &StepRecord, repeated: bool) -> StepNode {
    StepNode {
        step: s.id.0,
        stage: s.stage.clone(),
        kind: s.kind.clone(),
        code_version: s.code_version.clone(),
        command: s.command.clone(),
        params: serde_json::from_str(&s.params_json).unwrap_or_default(),
        env: serde_json::from_str(&s.env_json).unwrap_or_default(),
        host: s.host.clone(),
        executor: s.executor.clone(),
        slurm_job_id: s.slurm_job_id.clone(),
        started_at: s.started_at,
        finished_at: s.finished_at,
        peak_rss_kb: s.peak_rss_kb,
        artifacts: Vec::new(),
        repeated,
    }
}

fn up<'a>(
    ws: &'a Workspace,
    a: Artifact,
    name: Option<String>,
    seen: &'a mut HashSet<i64>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Node>> + 'a>> {
    Box::pin(async move {
        let mut n = node(&a, name);
        // A source recorded as a step's input may be a version some step made.
        let producer = match a.step_id {
            Some(s) => Some(s),
            None => ws
                .store
                .artifact_version(a.path.as_str(), &a.hash)
                .await?
                .and_then(|v| v.step_id),
        };
        if let Some(sid) = producer {
            let s = ws.store.step(StepId(sid)).await?;
            let repeated = !seen.insert(sid);
            let mut sn = step_node(&s, repeated);
            if !repeated {
                for p in ws.store.step_inputs(s.id).await? {
                    sn.artifacts
                        .push(up(ws, p.artifact, Some(p.name), seen).await?);
                }
            }
            n.produced_by = Some(sn);
        }
        Ok(n)
    })
}

fn down<'a>(
    ws: &'a Workspace,
    a: Artifact,
    name: Option<String>,
    seen: &'a mut HashSet<i64>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Node>> + 'a>> {
    Box::pin(async move {
        let mut n = node(&a, name);
        for s in ws.store.consumers(a.path.as_str(), &a.hash).await? {
            let repeated = !seen.insert(s.id.0);
            let mut sn = step_node(&s, repeated);
            if !repeated {
                for p in ws.store.step_outputs(s.id).await? {
                    sn.artifacts
                        .push(down(ws, p.artifact, Some(p.name), seen).await?);
                }
            }
            n.consumed_by.push(sn);
        }
        Ok(n)
    })
}

/// One artifact whose bytes no longer match the record.
#[derive(Debug, Serialize)]
pub struct Changed {
    pub path: String,
    pub recorded: String,
    /// `None`: the artifact is gone.
    pub now: Option<String>,
    pub step: Option<i64>,
}

/// Re-hashes (reading every byte, trusting no cache) the newest recorded
/// version of every recorded artifact, the sources steps read included, and
/// returns those that changed with the number checked.
pub async fn verify(ws: &Workspace) -> Result<(usize, Vec<Changed>)> {
    let arts = ws.store.recorded_artifacts().await?;
    let mut changed = Vec::new();
    for a in &arts {
        let abs = ws.root.join(&a.path);
        let now = tokio::task::spawn_blocking(move || hash::hash_path(&abs, None)).await??;
        let now = now.map(|(h, _)| h.hash.to_hex().to_string());
        if now.as_deref() != Some(a.hash.as_str()) {
            changed.push(Changed {
                path: a.path.to_string(),
                recorded: a.hash.clone(),
                now,
                step: a.step_id,
            });
        }
    }
    Ok((arts.len(), changed))
}

/// The recorded steps behind the artifact versions `inputs` (path, BLAKE3),
/// ancestors first and each once: what the engine hands a report step so
/// that it can show where its numbers came from without reading the store.
pub async fn provenance(ws: &Workspace, inputs: &[(&str, &str)]) -> Result<Vec<ProvStep>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (path, hash) in inputs {
        behind(ws, path, hash, &mut seen, &mut out).await?;
    }
    Ok(out)
}

fn behind<'a>(
    ws: &'a Workspace,
    path: &'a str,
    hash: &'a str,
    seen: &'a mut HashSet<i64>,
    out: &'a mut Vec<ProvStep>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>> {
    Box::pin(async move {
        let Some(sid) = ws
            .store
            .artifact_version(path, hash)
            .await?
            .and_then(|a| a.step_id)
        else {
            return Ok(()); // a source no recorded step made
        };
        if !seen.insert(sid) {
            return Ok(());
        }
        let s = ws.store.step(StepId(sid)).await?;
        let inputs = ws.store.step_inputs(s.id).await?;
        for p in &inputs {
            behind(ws, p.artifact.path.as_str(), &p.artifact.hash, seen, out).await?;
        }
        let ports = |ps: Vec<crate::store::Port>| {
            ps.into_iter()
                .map(|p| ProvArtifact {
                    name: p.name,
                    path: p.artifact.path.to_string(),
                    hash: p.artifact.hash,
                })
                .collect()
        };
        out.push(ProvStep {
            stage: s.stage.clone(),
            kind: s.kind.clone(),
            code_version: s.code_version.clone(),
            params: serde_json::from_str(&s.params_json).unwrap_or_default(),
            inputs: ports(inputs),
            outputs: ports(ws.store.step_outputs(s.id).await?),
        });
        Ok(())
    })
}
