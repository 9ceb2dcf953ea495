//! `pipeline`: reproduces the AVDFD research pipeline end to end and keeps an
//! auditable record of every artifact it made.
//!
//! Data flows one way: YAML -> [`engine::pipeline::Pipeline`] -> [`engine::dag::Dag`]
//! -> [`engine::plan::Plan`] -> jobs ([`exec`]) -> results -> [`store`].
//!
//! Layers, top to bottom: `cli` (in the binary), [`engine`], [`exec`], [`stages`],
//! [`store`], [`hash`]; the heavy domain modules `media` (FFmpeg) and `models`
//! (libtorch) sit behind the cargo features of the same names.

pub mod auc;
pub mod engine;
pub mod exec;
pub mod hash;
pub mod stages;
pub mod store;
pub mod util;

#[cfg(feature = "media")]
pub mod media;
#[cfg(feature = "torch")]
pub mod models;
