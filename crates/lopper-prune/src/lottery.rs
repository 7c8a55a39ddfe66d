//! Iterative magnitude pruning with weight rewinding (the lottery ticket procedure, Frankle &
//! Carbin 2019; rewinding to step k, Frankle et al. 2020).
//!
//! Train; at step `k` the weights are saved (the rewind checkpoint); at the end of each round the
//! trainer calls [`LotteryTicket::end_round`]: `p` of the surviving weights with the smallest
//! magnitude are pruned, the mask is appended to the history, and the survivors are rewound to
//! their step-`k` values (pruned ones are zero). The trainer then resumes training from step `k`.
//! After round `r` the sparsity is `1 - (1 - p)^r`.
use crate::criterion::Magnitude;
use crate::granularity::{Granularity, Unstructured};
use crate::param::{Mask, Param, ParamRef};
use crate::schedule::{Manual, PruneReport, Pruner};
use crate::scope::Scope;
use crate::{Error, Result};
use std::collections::BTreeMap;

/// Iterative magnitude pruning with rewinding.
pub struct LotteryTicket {
    prune_fraction: f64,
    rounds: usize,
    rewind_step: u64,
    pruner: Pruner,
    checkpoint: Option<BTreeMap<String, Vec<f32>>>,
    history: Vec<BTreeMap<String, Mask>>,
}

/// What a round did.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundReport {
    /// 1-based round just completed.
    pub round: usize,
    /// Sparsity after it.
    pub sparsity: f64,
    /// The step the weights were rewound to: resume training there.
    pub rewind_step: u64,
    /// Accounting of the pruning.
    pub prune: PruneReport,
}

impl LotteryTicket {
    /// `rounds` rounds pruning `prune_fraction` (in `(0, 1)`) of the survivors each, rewinding to
    /// `rewind_step`, unstructured magnitude within `scope`.
    pub fn new(prune_fraction: f64, rounds: usize, rewind_step: u64, scope: Scope) -> Result<Self> {
        Self::with_granularity(
            prune_fraction,
            rounds,
            rewind_step,
            scope,
            Box::new(Unstructured),
        )
    }

    /// The same with another granularity.
    pub fn with_granularity(
        prune_fraction: f64,
        rounds: usize,
        rewind_step: u64,
        scope: Scope,
        granularity: Box<dyn Granularity>,
    ) -> Result<Self> {
        if !(prune_fraction > 0.0 && prune_fraction < 1.0) || rounds == 0 {
            return Err(Error::invalid(
                "lottery ticket",
                format!(
                    "need 0 < prune fraction < 1 and rounds >= 1, got {prune_fraction} and {rounds}"
                ),
            ));
        }
        Ok(LotteryTicket {
            prune_fraction,
            rounds,
            rewind_step,
            pruner: Pruner::new(Box::new(Magnitude), granularity, scope, Box::new(Manual)),
            checkpoint: None,
            history: Vec::new(),
        })
    }

    /// Sparsity after round `r`: `1 - (1 - p)^r`.
    pub fn sparsity_after_round(&self, r: usize) -> f64 {
        1.0 - (1.0 - self.prune_fraction).powi(r as i32)
    }

    /// Saves the rewind checkpoint (all given params).
    pub fn save_checkpoint(&mut self, params: &[ParamRef<'_>]) {
        self.checkpoint = Some(
            params
                .iter()
                .map(|p| (p.name.to_string(), p.values.to_vec()))
                .collect(),
        );
    }

    /// The hook after every optimizer step: saves the checkpoint at the rewind step (first round
    /// only) and keeps pruned weights at zero.
    pub fn after_step(&mut self, step: u64, params: &mut [Param<'_>]) -> Result<()> {
        if step == self.rewind_step && self.checkpoint.is_none() {
            let refs: Vec<ParamRef<'_>> = params.iter().map(|p| p.as_ref()).collect();
            self.save_checkpoint(&refs);
        }
        self.pruner.apply_masks(params)
    }

    /// Ends a round: prunes, records the mask, rewinds the survivors.
    pub fn end_round(&mut self, params: &mut [Param<'_>]) -> Result<RoundReport> {
        let round = self.history.len() + 1;
        if round > self.rounds {
            return Err(Error::invalid(
                "lottery ticket",
                format!("all {} rounds are done", self.rounds),
            ));
        }
        let ckpt = self.checkpoint.as_ref().ok_or_else(|| {
            Error::mismatch(
                "LotteryTicket::end_round",
                format!(
                    "no rewind checkpoint: step {} was never reached",
                    self.rewind_step
                ),
            )
        })?;
        for p in params.iter() {
            match ckpt.get(p.name) {
                Some(v) if v.len() == p.values.len() => {}
                _ => {
                    return Err(Error::mismatch(
                        "LotteryTicket::end_round",
                        format!(
                            "tensor {:?} is not in the rewind checkpoint with its size",
                            p.name
                        ),
                    ));
                }
            }
        }
        let sparsity = self.sparsity_after_round(round);
        let prune = self.pruner.prune_now(round as u64, sparsity, params)?;
        let ckpt = self.checkpoint.as_ref().expect("checked above");
        for p in params.iter_mut() {
            p.values.copy_from_slice(&ckpt[p.name]);
        }
        self.pruner.apply_masks(params)?;
        self.history.push(self.pruner.masks().clone());
        Ok(RoundReport {
            round,
            sparsity,
            rewind_step: self.rewind_step,
            prune,
        })
    }

    /// Masks after each completed round, oldest first.
    pub fn history(&self) -> &[BTreeMap<String, Mask>] {
        &self.history
    }

    /// The rewind checkpoint, once saved.
    pub fn checkpoint(&self) -> Option<&BTreeMap<String, Vec<f32>>> {
        self.checkpoint.as_ref()
    }

    /// The current masks.
    pub fn masks(&self) -> &BTreeMap<String, Mask> {
        self.pruner.masks()
    }

    /// Rounds completed.
    pub fn rounds_done(&self) -> usize {
        self.history.len()
    }
}
