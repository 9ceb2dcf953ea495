//! The media layer of `pipeline`: the FFmpeg module ([`media`]: decoding,
//! resampling, log-mel, frame sampling, encoding, muxing) and the media stage
//! kinds ([`stages`]: synth, seedvc, elements, shortcut_audit,
//! voxceleb_subset), run by the program `pipeline-media`. It sits below the engine's job contract
//! (`pipeline_core::stages::Stage`) and above nothing of the engine's run loop;
//! the engine (`pipeline`) never links FFmpeg, so it starts in milliseconds.

pub mod media;
pub mod stages;

// The engine's shared pieces, under the names the stage files use.
use pipeline_core::{auc, elementset, rng, util};
