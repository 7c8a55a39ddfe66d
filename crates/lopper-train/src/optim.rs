//! Optimizers. They see parameters as [`ParamMut`] (values, gradient, optional mask) and keep
//! their state per parameter name, so they update exactly the stored values of a Csr or 2:4
//! weight (its pattern stays) and keep a Masked weight's zeros zero.
use crate::Result;
use lopper_nn::ParamMut;
use std::collections::BTreeMap;

/// An optimizer's state for a checkpoint: named tensors (e.g. `{param}.m`) and scalars
/// (e.g. `t`, the step count).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimState {
    pub tensors: BTreeMap<String, Vec<f32>>,
    pub scalars: BTreeMap<String, f64>,
}

/// An optimizer.
pub trait Optimizer: Send {
    /// `sgd` or `adamw`.
    fn name(&self) -> &'static str;
    /// One update of every parameter at learning rate `lr`.
    fn step(&mut self, params: &mut [ParamMut<'_>], lr: f32) -> Result<()>;
    /// A parameter's layout changed (its layer switched kind, or its sparsity pattern moved).
    /// With `Some(gather)`: new entry `i` takes the state of old entry `gather[i]`, or zero state
    /// when `None` (a grown connection). With `None`: the parameter's state is dropped.
    fn remap(&mut self, name: &str, gather: Option<&[Option<usize>]>);
    /// The state to save in a checkpoint.
    fn state(&self) -> OptimState;
    /// Restores a state saved by [`Optimizer::state`].
    fn load_state(&mut self, state: &OptimState) -> Result<()>;
}
