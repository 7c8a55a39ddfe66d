//! lopper: sparse and low-rank training that computes less, and measures it.
//!
//! This facade re-exports the workspace's crates; depend on them one by one if you prefer.
pub use lopper_energy as energy;
pub use lopper_lowrank as lowrank;
pub use lopper_nn as nn;
pub use lopper_prune as prune;
pub use lopper_sparse as sparse;
pub use lopper_tensor as tensor;
pub use lopper_train as train;
