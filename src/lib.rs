//! `pipeline`: reproduces the AVDFD research pipeline end to end and keeps an
//! auditable record of every artifact it made.
//!
//! Data flows one way: YAML -> [`engine::pipeline::Pipeline`] -> [`engine::dag::Dag`]
//! -> [`engine::plan::Plan`] -> jobs ([`exec`]) -> results -> [`store`].
//!
//! Layers, top to bottom: `cli` (in the binary), [`engine`], [`exec`], [`stages`]
//! (the contract, the table of kinds and their parameter types),
//! [`elementset`], [`store`], [`hash`], [`relpath`]. The kinds themselves live in two
//! crates that build on this library: `pipeline-media` (FFmpeg; the media
//! kinds) and `pipeline-models` (libtorch; the model kinds), each with its
//! own program, to which `pipeline exec-step` hands a step. This crate links neither, so `pipeline` starts in milliseconds.

pub mod auc;
pub mod elementset;
pub mod engine;
pub mod exec;
pub mod hash;
pub mod relpath;
pub mod rng;
pub mod stages;
pub mod store;
pub mod util;
