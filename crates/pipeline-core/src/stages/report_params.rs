//! The report kind's parameters (checked at plan time like every kind's).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportParams {
    /// The page's title.
    pub title: String,
    /// The split whose per-clip scores the ROC curves are drawn from.
    pub split: String,
}

impl Default for ReportParams {
    fn default() -> Self {
        ReportParams {
            title: "Directionality-aware audio-visual deepfake detection: results".into(),
            split: "test".into(),
        }
    }
}

impl ReportParams {
    pub fn from_json(params: &serde_json::Value) -> anyhow::Result<Self> {
        let p: ReportParams = super::parse_params(params)?;
        if !["train", "validation", "test"].contains(&p.split.as_str()) {
            anyhow::bail!(
                "parameter 'split': '{}' is not one of train, validation, test",
                p.split
            );
        }
        Ok(p)
    }
}
