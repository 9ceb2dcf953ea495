//! The engine: pipeline YAML -> validated DAG -> plan (what is stale, and why)
//! -> running the plan through an executor, recording everything in the store.

pub mod check;
pub mod checkout;
pub mod compare;
pub mod dag;
pub mod envkey;
pub mod events;
mod executor;
pub mod export;
pub mod fingerprint;
pub mod gc;
pub mod ingest;
pub mod lineage;
mod local_steps;
pub mod params;

pub mod pipeline;
pub mod plan;
pub mod reattach;
pub mod recover;
pub mod resume;
pub mod run;
mod scheduler;
mod slurm_steps;
pub mod status;
pub mod workspace;
