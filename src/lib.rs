//! `pipeline`: reproduces the AVDFD research pipeline end to end and keeps an
//! auditable record of every artifact it made.
//!
//! Data flows one way: YAML -> [`engine::pipeline::Pipeline`] -> [`engine::dag::Dag`]
//! -> [`engine::plan::Plan`] -> jobs ([`exec`]) -> results -> [`store`].
//!
//! Layers, top to bottom, each a crate that cannot import those above it:
//! `cli` (this package's binary), [`engine`] with [`exec`]'s executors (this
//! library), [`store`] (`pipeline-store`: SQLite through sqlx, re-exported
//! here), then `pipeline-core` (the job contract and its
//! runner, [`stages`]' table of kinds and their parameter types,
//! [`elementset`], [`hash`], [`relpath`]; re-exported here). The kinds live in
//! two crates that depend on `pipeline-core` alone: `pipeline-media`
//! (FFmpeg; the media kinds) and `pipeline-models` (libtorch; the model
//! kinds), each with its own program, to which `pipeline exec-step` hands a
//! step. This crate links neither, so `pipeline` starts in milliseconds.

pub mod engine;
pub mod exec;

pub use pipeline_core::{auc, elementset, hash, relpath, rng, stages, util};
pub use pipeline_store as store;
