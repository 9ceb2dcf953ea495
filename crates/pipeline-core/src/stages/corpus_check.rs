//! What `pipeline-media check-corpus` tells `pipeline check` about a
//! FakeAVCeleb-shaped corpus: the videos that cannot be used (missing,
//! unopenable, without a video or an audio stream) and, when asked, the
//! clips the elements stage would make of it with their split. The engine
//! cannot open a video (it links no FFmpeg), so the media program answers
//! in these types, written as JSON on its standard output.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::category::Category;
use crate::elementset::Split;

/// One corpus, checked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CorpusReport {
    /// Videos found under the category folders of the inputs.
    pub videos: usize,
    /// Videos whose probe ran now, and those answered from the memo.
    pub probed: usize,
    pub reused: usize,
    /// Every file that cannot be used, with why.
    pub bad: Vec<BadFile>,
    /// With a split asked for: one clip per video as the elements stage
    /// would label and split it (planned voice clones included).
    #[serde(default)]
    pub clips: Option<Vec<PlannedClip>>,
    /// The split could not be made (a bad split file, say): why.
    #[serde(default)]
    pub split_error: Option<String>,
}

/// A file the elements (or seedvc) stage could not use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadFile {
    pub path: PathBuf,
    pub problem: String,
}

/// A clip of the element set to be: what the split checks need of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedClip {
    pub identity: String,
    pub category: Category,
    pub split: Split,
}
