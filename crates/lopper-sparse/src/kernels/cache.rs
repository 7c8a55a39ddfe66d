//! What a matrix keeps for a kernel that reads its entries in an order of its own: a plan built
//! from the pattern (once), and the values in the plan's order (again after every `values_mut`).
use std::sync::{Mutex, OnceLock};

/// A pattern plan `P` and the values in its order; not part of a matrix's equality or `Debug`.
/// Boxed, so that a matrix that never runs the kernel carries one pointer for it.
pub(crate) struct KernelCache<P>(Box<Inner<P>>);

struct Inner<P> {
    plan: OnceLock<P>,
    values: OnceLock<Vec<f32>>,
    /// The buffer of a copy that `values_changed` dropped, reused by the next (no
    /// fresh pages to fault in on every training step).
    spare: Mutex<Vec<f32>>,
}

impl<P> Default for KernelCache<P> {
    fn default() -> Self {
        KernelCache(Box::new(Inner {
            plan: OnceLock::new(),
            values: OnceLock::new(),
            spare: Mutex::default(),
        }))
    }
}

impl<P: Clone> Clone for KernelCache<P> {
    fn clone(&self) -> Self {
        KernelCache(Box::new(Inner {
            plan: self.0.plan.clone(),
            values: self.0.values.clone(),
            spare: Mutex::default(),
        }))
    }
}

impl<P> PartialEq for KernelCache<P> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<P> std::fmt::Debug for KernelCache<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelCache")
    }
}

impl<P> KernelCache<P> {
    /// The plan and the values in its order, built where missing: `build()` once, then
    /// `gather(plan, buffer)` (which may run on rayon).
    pub(crate) fn get(
        &self,
        build: impl FnOnce() -> P,
        gather: impl FnOnce(&P, Vec<f32>) -> Vec<f32>,
    ) -> (&P, &[f32]) {
        let c = &self.0;
        let plan = c.plan.get_or_init(build);
        if let Some(v) = c.values.get() {
            return (plan, v);
        }
        // gathered outside the lock: a gather on rayon that stole a task of another product of
        // the same matrix must not wait on its own initialization
        let buf = std::mem::take(&mut *c.spare.lock().unwrap_or_else(|e| e.into_inner()));
        let v = gather(plan, buf);
        (plan, c.values.get_or_init(|| v))
    }

    /// The values changed: drops their copy (its buffer is kept for the next).
    pub(crate) fn values_changed(&mut self) {
        let c = &mut self.0;
        if let Some(v) = c.values.take() {
            *c.spare.get_mut().unwrap_or_else(|e| e.into_inner()) = v;
        }
    }
}
