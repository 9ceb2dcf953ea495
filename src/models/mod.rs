//! libtorch models: shared layers, the stage-1/stage-2/baseline networks,
//! losses, metrics and training loops. Knows nothing about the engine or the store.
