//! Lineage export for auditors, from the store alone: every recorded run and
//! step as OpenLineage 2-0-2 run events (NDJSON), or the whole record as one
//! W3C PROV-JSON document.
//!
//! OpenLineage: each `pipeline run` is a run of the job `pipeline`; each step
//! is a run of the job named by its stage, whose parent facet names the
//! pipeline run; each shard of a sharded step (a Slurm array task) is a run of
//! `<stage>.shard-<i>` whose parent is the step. A run has a START event and,
//! once it ended, one COMPLETE, FAIL or ABORT. Datasets are the artifacts:
//! namespace `file://<host>`, name their absolute path, version their BLAKE3
//! (the `version` facet). Run ids are UUIDs derived from the workspace's key,
//! so an export repeated gives the same ids.
//!
//! PROV: entities are artifact versions (`pipeline:artifact/<id>`), activities
//! are steps, agents are the host and the user of each run; `used`,
//! `wasGeneratedBy`, `wasAssociatedWith` and `wasDerivedFrom` (every output
//! of a step from every input it read) relate them.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::workspace::Workspace;
use crate::exec::job;
use crate::store::{Artifact, Port, RunRecord, StepId, StepRecord, StepStatus};
use crate::util::UtcTime;

pub const OPENLINEAGE_SCHEMA: &str =
    "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const PRODUCER: &str = concat!("urn:pipeline:", env!("CARGO_PKG_VERSION"));
const STEP_FACET_SCHEMA: &str = "urn:pipeline:facets:step:1";

/// One OpenLineage run event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunEvent {
    pub event_type: &'static str,
    pub event_time: String,
    pub producer: &'static str,
    #[serde(rename = "schemaURL")]
    pub schema_url: &'static str,
    pub run: OlRun,
    pub job: OlJob,
    pub inputs: Vec<OlDataset>,
    pub outputs: Vec<OlDataset>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OlRun {
    pub run_id: String,
    pub facets: Map<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct OlJob {
    pub namespace: String,
    pub name: String,
    pub facets: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OlDataset {
    pub namespace: String,
    pub name: String,
    pub facets: Map<String, Value>,
}

/// What the store recorded, read once.
struct Record {
    runs: Vec<RunRecord>,
    steps: Vec<StepRecord>,
    inputs: HashMap<StepId, Vec<Port>>,
    outputs: HashMap<StepId, Vec<Port>>,
}

async fn read(ws: &Workspace) -> Result<Record> {
    let steps = ws.store.all_steps().await?;
    let mut inputs = HashMap::new();
    let mut outputs = HashMap::new();
    for s in &steps {
        inputs.insert(s.id, ws.store.step_inputs(s.id).await?);
        outputs.insert(s.id, ws.store.step_outputs(s.id).await?);
    }
    Ok(Record {
        runs: ws.store.all_runs().await?,
        steps,
        inputs,
        outputs,
    })
}

fn facet(schema: &str, body: Value) -> Value {
    let mut v = json!({"_producer": PRODUCER, "_schemaURL": schema});
    if let (Some(m), Value::Object(b)) = (v.as_object_mut(), body) {
        m.extend(b);
    }
    v
}

fn facets(items: Vec<(&str, Value)>) -> Map<String, Value> {
    items.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Every run, step and shard as OpenLineage run events, in time order of
/// the store (runs, then their steps, each START before its end).
pub async fn openlineage(ws: &Workspace, namespace: &str) -> Result<Vec<RunEvent>> {
    let rec = read(ws).await?;
    let ex = Exporter { ws, namespace };
    let mut events = Vec::new();
    let hosts: HashMap<i64, &str> = rec.runs.iter().map(|r| (r.id, r.host.as_str())).collect();
    for run in &rec.runs {
        let id = ws.env_key.uuid(&format!("run:{}", run.id));
        let engine = facet(
            "https://openlineage.io/spec/facets/1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet",
            json!({"name": "pipeline", "version": env!("CARGO_PKG_VERSION")}),
        );
        let job = || ex.job("pipeline", "DAG");
        let engine_run = || ex.run(&id, vec![("processing_engine", engine.clone())]);
        events.push(ex.event("START", run.started_at, engine_run(), job()));
        let end = match run.status.as_str() {
            "succeeded" => Some("COMPLETE"),
            "failed" => Some("FAIL"),
            "interrupted" => Some("ABORT"),
            _ => None,
        };
        if let (Some(end), Some(at)) = (end, run.finished_at) {
            events.push(ex.event(end, at, engine_run(), job()));
        }
    }
    for s in &rec.steps {
        let host = s
            .host
            .as_deref()
            .or(hosts.get(&s.run_id).copied())
            .unwrap_or("localhost");
        let id = ws.env_key.uuid(&format!("step:{}", s.id));
        let parent = ex.parent(&ws.env_key.uuid(&format!("run:{}", s.run_id)), "pipeline");
        let step_facet = facet(
            STEP_FACET_SCHEMA,
            json!({
                "step": s.id.0,
                "kind": s.kind,
                "fingerprint": s.fingerprint,
                "codeVersion": s.code_version,
                "command": s.command,
                "params": serde_json::from_str::<Value>(&s.params_json).unwrap_or(Value::Null),
                "executor": s.executor,
                "slurmJobId": s.slurm_job_id,
                "reason": s.reason,
            }),
        );
        let ins = ex.datasets(host, &rec.inputs[&s.id]);
        let start = s.started_at.unwrap_or(s.queued_at);
        let mut started = ex.event(
            "START",
            start,
            ex.run(
                &id,
                vec![
                    ("parent", parent.clone()),
                    ("pipeline_step", step_facet.clone()),
                ],
            ),
            ex.job(&s.stage, "STEP"),
        );
        started.inputs = ins.clone();
        events.push(started);
        if let Some(at) = s.finished_at.filter(|_| s.status.is_finished()) {
            let mut run_facets = vec![("parent", parent), ("pipeline_step", step_facet)];
            let end = match s.status {
                StepStatus::Succeeded => "COMPLETE",
                StepStatus::Interrupted => "ABORT",
                _ => "FAIL",
            };
            if end == "FAIL" {
                run_facets.push(("errorMessage", ex.error(s.error.as_deref())));
            }
            let mut ended = ex.event(end, at, ex.run(&id, run_facets), ex.job(&s.stage, "STEP"));
            ended.inputs = ins;
            ended.outputs = ex.datasets(host, &rec.outputs[&s.id]);
            events.push(ended);
        }
        events.extend(ex.shards(s, &id)?);
    }
    Ok(events)
}

struct Exporter<'a> {
    ws: &'a Workspace,
    namespace: &'a str,
}

impl Exporter<'_> {
    /// An event of `kind` at `at` (unix ms), with no datasets yet.
    fn event(&self, kind: &'static str, at: i64, run: OlRun, job: OlJob) -> RunEvent {
        RunEvent {
            event_type: kind,
            event_time: UtcTime::rfc3339(at),
            producer: PRODUCER,
            schema_url: OPENLINEAGE_SCHEMA,
            run,
            job,
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    fn run(&self, run_id: &str, run_facets: Vec<(&str, Value)>) -> OlRun {
        OlRun {
            run_id: run_id.to_string(),
            facets: facets(run_facets),
        }
    }

    fn job(&self, name: &str, job_type: &str) -> OlJob {
        OlJob {
            namespace: self.namespace.to_string(),
            name: name.to_string(),
            facets: facets(vec![(
                "jobType",
                facet(
                    "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
                    json!({"processingType": "BATCH", "integration": "PIPELINE", "jobType": job_type}),
                ),
            )]),
        }
    }

    fn parent(&self, run_id: &str, job: &str) -> Value {
        facet(
            "https://openlineage.io/spec/facets/1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet",
            json!({"run": {"runId": run_id}, "job": {"namespace": self.namespace, "name": job}}),
        )
    }

    fn error(&self, message: Option<&str>) -> Value {
        facet(
            "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
            json!({"message": message.unwrap_or("failed"), "programmingLanguage": "rust"}),
        )
    }

    fn datasets(&self, host: &str, ports: &[Port]) -> Vec<OlDataset> {
        ports
            .iter()
            .map(|p| OlDataset {
                namespace: format!("file://{host}"),
                name: p.artifact.path.under(&self.ws.root).display().to_string(),
                facets: facets(vec![(
                    "version",
                    facet(
                        "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
                        json!({"datasetVersion": p.artifact.hash}),
                    ),
                )]),
            })
            .collect()
    }

    /// The shards of a sharded step, from its folder (gone after `gc`: none).
    fn shards(&self, s: &StepRecord, step_run: &str) -> Result<Vec<RunEvent>> {
        let dir = self.ws.step_dir(s.id);
        let Some(n) = job::read_job(&dir).ok().and_then(|j| j.shards) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for i in 0..n {
            let Some(r) = job::read_result_of(&dir, Some(i))? else {
                continue;
            };
            let id = self.ws.env_key.uuid(&format!("step:{}:shard:{i}", s.id));
            let parent = self.parent(step_run, &s.stage);
            let name = format!("{}.shard-{i}", s.stage);
            out.push(self.event(
                "START",
                r.started_at,
                self.run(&id, vec![("parent", parent.clone())]),
                self.job(&name, "TASK"),
            ));
            let mut f = vec![("parent", parent)];
            let end = if r.succeeded {
                "COMPLETE"
            } else {
                f.push(("errorMessage", self.error(r.error.as_deref())));
                "FAIL"
            };
            out.push(self.event(
                end,
                r.finished_at,
                self.run(&id, f),
                self.job(&name, "TASK"),
            ));
        }
        Ok(out)
    }
}

/// The whole record as one W3C PROV-JSON document.
pub async fn prov(ws: &Workspace) -> Result<Value> {
    let rec = read(ws).await?;
    let mut entity = BTreeMap::new();
    let mut activity = BTreeMap::new();
    let mut agent = BTreeMap::new();
    let mut used = BTreeMap::new();
    let mut generated = BTreeMap::new();
    let mut associated = BTreeMap::new();
    let mut derived = BTreeMap::new();
    let mut acted_for = BTreeMap::new();
    let run_of: HashMap<i64, &RunRecord> = rec.runs.iter().map(|r| (r.id, r)).collect();
    let art_id = |a: &Artifact| format!("pipeline:artifact/{}", a.id);
    let add_entity = |a: &Artifact, entity: &mut BTreeMap<String, Value>| {
        entity.entry(art_id(a)).or_insert_with(|| {
            json!({
                "prov:label": a.path.as_str(),
                "pipeline:path": a.path.as_str(),
                "pipeline:blake3": a.hash,
                "pipeline:size": a.size,
                "pipeline:files": a.file_count,
                "prov:type": if a.is_dir { "pipeline:Folder" } else { "pipeline:File" },
            })
        });
    };
    for r in &rec.runs {
        let host = format!("pipeline:host/{}", r.host);
        agent.insert(
            host.clone(),
            json!({"prov:type": "prov:SoftwareAgent", "prov:label": r.host}),
        );
        if let Some(u) = &r.user {
            let user = format!("pipeline:user/{u}");
            agent.insert(
                user.clone(),
                json!({"prov:type": "prov:Person", "prov:label": u}),
            );
            acted_for.insert(
                format!("_:run{}-acted", r.id),
                json!({"prov:delegate": host, "prov:responsible": user}),
            );
        }
    }
    for s in &rec.steps {
        let act = format!("pipeline:step/{}", s.id.0);
        let mut a = json!({
            "prov:label": format!("{} (step {})", s.stage, s.id.0),
            "prov:type": "pipeline:Step",
            "pipeline:stage": s.stage,
            "pipeline:kind": s.kind,
            "pipeline:status": s.status.as_str(),
            "pipeline:fingerprint": s.fingerprint,
            "pipeline:code_version": s.code_version,
            "pipeline:params": s.params_json,
            "pipeline:executor": s.executor,
        });
        if let Some(t) = s.started_at {
            a["prov:startTime"] = Value::String(UtcTime::rfc3339(t));
        }
        if let Some(t) = s.finished_at {
            a["prov:endTime"] = Value::String(UtcTime::rfc3339(t));
        }
        activity.insert(act.clone(), a);
        if let Some(r) = run_of.get(&s.run_id) {
            let host = s.host.clone().unwrap_or_else(|| r.host.clone());
            let id = format!("pipeline:host/{host}");
            agent
                .entry(id.clone())
                .or_insert_with(|| json!({"prov:type": "prov:SoftwareAgent", "prov:label": host}));
            associated.insert(
                format!("_:assoc{}", s.id.0),
                json!({"prov:activity": act, "prov:agent": id}),
            );
        }
        for (i, p) in rec.inputs[&s.id].iter().enumerate() {
            add_entity(&p.artifact, &mut entity);
            let mut u = json!({"prov:activity": act, "prov:entity": art_id(&p.artifact), "prov:role": p.name});
            if let Some(t) = s.started_at {
                u["prov:time"] = Value::String(UtcTime::rfc3339(t));
            }
            used.insert(format!("_:used{}-{i}", s.id.0), u);
        }
        for (o, p) in rec.outputs[&s.id].iter().enumerate() {
            add_entity(&p.artifact, &mut entity);
            let mut g = json!({"prov:activity": act, "prov:entity": art_id(&p.artifact), "prov:role": p.name});
            if let Some(t) = s.finished_at {
                g["prov:time"] = Value::String(UtcTime::rfc3339(t));
            }
            generated.insert(format!("_:gen{}-{o}", s.id.0), g);
            for (i, q) in rec.inputs[&s.id].iter().enumerate() {
                derived.insert(
                    format!("_:der{}-{o}-{i}", s.id.0),
                    json!({
                        "prov:generatedEntity": art_id(&p.artifact),
                        "prov:usedEntity": art_id(&q.artifact),
                        "prov:activity": act,
                    }),
                );
            }
        }
    }
    let mut doc = json!({
        "prefix": {
            "pipeline": "urn:pipeline:",
            "xsd": "http://www.w3.org/2001/XMLSchema#",
        },
        "entity": entity,
        "activity": activity,
        "agent": agent,
        "used": used,
        "wasGeneratedBy": generated,
        "wasAssociatedWith": associated,
        "wasDerivedFrom": derived,
    });
    if !acted_for.is_empty() {
        doc["actedOnBehalfOf"] = json!(acted_for);
    }
    Ok(doc)
}
