//! FLOP accounting: what a layer executed against what the dense layer of the same shape would.
//! One multiply-add counts as 2 FLOPs.

/// FLOPs of a pass: `executed` (what the chosen weight kind runs) and `dense` (the dense-equivalent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flops {
    /// FLOPs this weight kind executes.
    pub executed: u64,
    /// FLOPs of the dense layer of the same shape.
    pub dense: u64,
}

impl Flops {
    /// Executed and dense-equivalent FLOPs.
    pub fn new(executed: u64, dense: u64) -> Flops {
        Flops { executed, dense }
    }
    /// The same count for both (a dense op).
    pub fn same(f: u64) -> Flops {
        Flops {
            executed: f,
            dense: f,
        }
    }
    /// `executed / dense` (1 for an empty count).
    pub fn ratio(&self) -> f64 {
        if self.dense == 0 {
            1.0
        } else {
            self.executed as f64 / self.dense as f64
        }
    }
}

impl std::ops::Add for Flops {
    type Output = Flops;
    fn add(self, o: Flops) -> Flops {
        Flops::new(self.executed + o.executed, self.dense + o.dense)
    }
}

impl std::ops::AddAssign for Flops {
    fn add_assign(&mut self, o: Flops) {
        *self = *self + o;
    }
}

/// FLOPs of one training step of a layer or model: forward and backward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepFlops {
    /// Of the forward.
    pub forward: Flops,
    /// Of the backward (input and parameter gradients).
    pub backward: Flops,
}

impl StepFlops {
    /// Forward + backward.
    pub fn total(&self) -> Flops {
        self.forward + self.backward
    }
}

impl std::ops::AddAssign for StepFlops {
    fn add_assign(&mut self, o: StepFlops) {
        self.forward += o.forward;
        self.backward += o.backward;
    }
}
