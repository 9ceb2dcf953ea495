//! `pipeline`: reproduces the AVDFD research pipeline end to end and keeps an
//! auditable record of every artifact it made.
//!
//! Data flows one way: YAML -> [`engine::pipeline::Pipeline`] -> [`engine::dag::Dag`]
//! -> [`engine::plan::Plan`] -> jobs ([`exec`]) -> results -> [`store`].
//!
//! Layers, top to bottom: `cli` (in the binary), [`engine`], [`exec`], [`stages`],
//! [`store`], [`hash`]; the FFmpeg module `media` sits behind the cargo feature
//! of that name. The libtorch models live in the `pipeline-models` crate, whose
//! program `pipeline-worker` runs the model stage kinds: this crate never links
//! libtorch, so `pipeline` starts in milliseconds.

pub mod auc;
pub mod engine;
pub mod exec;
pub mod hash;
pub mod rng;
pub mod stages;
pub mod store;
pub mod util;

#[cfg(feature = "media")]
pub mod media;
