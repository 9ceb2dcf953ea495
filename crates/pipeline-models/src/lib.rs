//! libtorch models: shared layers, the stage-1/stage-2/baseline networks,
//! losses, metrics, data loading and training loops, and the model stage kinds
//! ([`stages`]) that `pipeline-worker` runs. Module names mirror the PyTorch
//! state-dict names. Uses of the `pipeline` crate below the engine only: the
//! [`pipeline_core::stages::Stage`] trait and its item log, hashing, the AUC.
//!
//! Reading order: [`layers`] (PyTorch-semantics building blocks), the
//! networks [`stage1`], [`marlin`], [`stage2`], [`baseline`]; [`checkpoint`]
//! (safetensors with reference names, and the one-line conversion of a
//! reference `.pt`); [`forward`] (`pipeline model forward`, parity at any
//! size); then training: [`data`], [`losses`], [`optim`], [`train`],
//! [`recipes`], [`stage_run`]; [`metrics`] for evaluation.
//!
//! Where we deliberately differ from the reference (MODELS.md):
//! stage 2 loads stage 1's `aux_head` as its `audio_head` (defect 1,
//! [`stage_run::run_stage2`]); augmentation happens at load time, training
//! only, one draw per clip (defect 2, [`data`]); the MARLIN backbone runs once
//! per forward (defect 3, [`stage2`]); the baseline's `noise` is a real boolean
//! (defect 5, [`recipes::BaselineParams`]); the audio input kind is a named
//! parameter (defect 6, [`data::AudioInput`]). Kept on purpose: the baseline's
//! fusion attention across the batch axis ([`baseline`]).
//!
//! Three named switches in the configuration: stage 2's `a2v_mode`
//! ([`stage2`]; default `reference`; `time_aligned`, the demo's, takes the A2V
//! discrepancy over time steps with the audio at the frames' own times),
//! `frozen_audio_dropout` ([`recipes::Stage2Params`]; default off, our
//! deviation: the frozen stage-1 branch runs in eval mode, where the
//! reference's `model.train()` keeps its dropout on), and `fusion_refit`
//! (default none, the reference's jointly fitted gate; the demo's fits
//! `conf_net` again on held-out identities, [`recipes::Stage2Phase`]).
//! README "The demo's science" has the measurements behind all three.

pub mod amp;
pub mod baseline;
pub mod bench;
pub use pipeline_core::stages::category;
pub mod checkpoint;
pub mod data;
pub mod detect;
pub mod device;
pub mod forward;
pub mod layers;
pub mod losses;
pub mod marlin;
pub mod metrics;
pub mod optim;
pub mod recipes;
pub use pipeline_core::rng;
pub mod stage1;
pub mod stage2;
pub mod stage_run;
pub mod stages;
pub mod synthetic;
pub mod train;
