//! Getting data for the pipeline: HTTP(S) downloads that resume, verify and
//! retry ([`http`]), archives unpacked without escaping their destination
//! ([`archive`]), the Hugging Face hub's dataset API ([`hub`]), and the
//! `download` stage kind built on them ([`stage`]).
//!
//! This crate links neither FFmpeg nor libtorch: `pipeline` runs the
//! download stage itself, and `pipeline-media` fetches its VoxCeleb2 shards
//! through [`http`] and [`hub`]. It knows nothing of the engine or the store;
//! a stage sees only its [`pipeline_core::stages::StageContext`].

pub mod archive;
pub mod http;
pub mod hub;
pub mod stage;
#[cfg(feature = "test-server")]
pub mod testserver;

pub use archive::{extract_tar, extract_zip, safe_entry_path};
pub use http::{Checksum, Downloaded, Http, HttpOptions};
pub use stage::registry;
