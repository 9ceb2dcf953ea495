//! `pipeline-core`: what the three programs of pipeline share, below the
//! engine. The engine (`pipeline`), the media program (`pipeline-media`) and
//! the model worker (`pipeline-worker`) all build on it; it imports none of
//! them, and the media and model crates depend on this crate alone, so the
//! compiler keeps them from reaching into the engine.
//!
//! Layers, top to bottom: [`exec`] (the step's job contract, the runner that
//! `exec-step` and both programs use, confinement and redaction),
//! [`stages`] (the contract, the table of kinds and their parameter types),
//! [`elementset`], [`hash`], [`relpath`], and the helpers [`auc`], [`rng`]
//! and [`util`].

pub mod auc;
pub mod elementset;
pub mod exec;
pub mod hash;
pub mod relpath;
pub mod rng;
pub mod stages;
pub mod util;
