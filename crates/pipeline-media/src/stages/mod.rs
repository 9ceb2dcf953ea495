//! The media stage kinds. Each implements the engine's [`Stage`] contract
//! and reads its version from the engine's one table of kinds
//! ([`pipeline_core::stages::KINDS`]), so `pipeline` plans with the versions this
//! program runs.

pub use pipeline_core::stages::{items, media_params, versions, Stage, StageContext};

pub mod audit;
pub mod check_corpus;
pub mod corpus;
pub mod elements;
pub mod elements_bench;
pub mod elements_extract;
pub mod elements_inspect;
pub mod seedvc;
pub mod seedvc_checks;
pub mod split;
pub mod synth;
mod synth_face;
mod synth_voice;
pub mod vc_standin;
pub mod voxceleb_subset;

/// The kinds `pipeline-media` implements.
pub fn registry() -> Vec<Box<dyn Stage>> {
    vec![
        Box::new(elements::Elements),
        Box::new(synth::Synth),
        Box::new(seedvc::SeedVc),
        Box::new(audit::ShortcutAudit),
        Box::new(voxceleb_subset::VoxcelebSubset),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_core::stages::{kind_info, Home, KINDS};

    #[test]
    fn every_media_kind_is_here_at_the_tables_version() {
        let mine = registry();
        for s in &mine {
            let k = kind_info(s.kind()).expect("in the table");
            assert_eq!(k.home, Home::Media, "{}", k.name);
            assert_eq!(s.version(), k.version, "{}", k.name);
        }
        let media: Vec<_> = KINDS.iter().filter(|k| k.home == Home::Media).collect();
        assert_eq!(media.len(), mine.len(), "{media:?}");
    }
}
