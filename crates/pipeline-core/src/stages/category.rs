//! The FakeAVCeleb categories (plus the two voice-cloned ones the seedvc stage
//! adds) and the labels each training stage derives from them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A clip's category, named by its FakeAVCeleb folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Category {
    #[serde(rename = "RealVideo-RealAudio")]
    Rvra,
    #[serde(rename = "RealVideo-FakeAudio")]
    Rvfa,
    #[serde(rename = "FakeVideo-RealAudio")]
    Fvra,
    #[serde(rename = "FakeVideo-FakeAudio")]
    Fvfa,
    #[serde(rename = "RealVideo-FakeAudio-VoiceClone")]
    RvfaVc,
    #[serde(rename = "RealVideo-FakeAudio-SelfVoiceClone")]
    RvfaSvc,
}

/// Every category, real first.
pub const ALL: [Category; 6] = [
    Category::Rvra,
    Category::Rvfa,
    Category::Fvra,
    Category::Fvfa,
    Category::RvfaVc,
    Category::RvfaSvc,
];

impl Category {
    /// The folder name, as written in manifests.
    pub fn folder(self) -> &'static str {
        match self {
            Self::Rvra => "RealVideo-RealAudio",
            Self::Rvfa => "RealVideo-FakeAudio",
            Self::Fvra => "FakeVideo-RealAudio",
            Self::Fvfa => "FakeVideo-FakeAudio",
            Self::RvfaVc => "RealVideo-FakeAudio-VoiceClone",
            Self::RvfaSvc => "RealVideo-FakeAudio-SelfVoiceClone",
        }
    }

    /// The category whose folder is `name`.
    /// The abbreviation the paper's tables use (RVRA, RVFA-VC, ...).
    pub fn short(self) -> &'static str {
        match self {
            Self::Rvra => "RVRA",
            Self::Rvfa => "RVFA",
            Self::Fvra => "FVRA",
            Self::Fvfa => "FVFA",
            Self::RvfaVc => "RVFA-VC",
            Self::RvfaSvc => "RVFA-SVC",
        }
    }

    pub fn from_folder(name: &str) -> Option<Self> {
        ALL.into_iter().find(|c| c.folder() == name)
    }

    /// Stage 2's target (the reference's video label): 0 for RVRA, 1 for
    /// every fake category.
    pub fn y_video(self) -> bool {
        self != Self::Rvra
    }

    /// Every category with fake audio.
    pub fn audio_fake(self) -> bool {
        !matches!(self, Self::Rvra | Self::Fvra)
    }

    /// Stage 1's ordinal label (RVRA 0 < RVFA-SVC 1 < RVFA-VC 2 < RVFA 3), or
    /// `None` for the categories stage 1 does not use.
    pub fn ordinal(self) -> Option<i64> {
        match self {
            Self::Rvra => Some(0),
            Self::RvfaSvc => Some(1),
            Self::RvfaVc => Some(2),
            Self::Rvfa => Some(3),
            Self::Fvra | Self::Fvfa => None,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.folder())
    }
}

impl FromStr for Category {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Self::from_folder(s).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown category '{s}' (known: {})",
                ALL.map(|c| c.folder()).join(", ")
            )
        })
    }
}
