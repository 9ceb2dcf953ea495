//! libtorch models: shared layers, the stage-1/stage-2/baseline networks,
//! losses, metrics, data loading and training loops. Module names mirror the
//! PyTorch state-dict names. Knows nothing about the engine or the store.

pub mod amp;
pub mod baseline;
pub mod bench;
pub mod category;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod forward;
pub mod layers;
pub mod losses;
pub mod marlin;
pub mod metrics;
pub mod optim;
pub mod recipes;
pub mod rng;
pub mod stage1;
pub mod stage2;
pub mod stage_run;
pub mod sweep;
pub mod synthetic;
pub mod train;
