/// Parallelism of a kernel, passed explicitly (faer style).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    /// One thread, the caller's.
    Seq,
    /// Rayon with at most this many threads; `0` means the current rayon pool's size, and lets a
    /// kernel run a product too small to pay for waking the pool on the calling thread alone
    /// (lopper-sparse's kernels do below 2^19 multiply-adds).
    Rayon(usize),
}

impl Default for Par {
    fn default() -> Self {
        Par::Rayon(0)
    }
}

impl Par {
    /// Rayon on the current pool (all its threads).
    pub const fn rayon() -> Par {
        Par::Rayon(0)
    }

    /// Number of threads this parallelism uses.
    pub fn threads(self) -> usize {
        match self {
            Par::Seq => 1,
            Par::Rayon(0) => rayon::current_num_threads().max(1),
            Par::Rayon(n) => n,
        }
    }

    /// The same parallelism as faer's `Par`.
    pub fn to_faer(self) -> faer::Par {
        match self.threads() {
            1 => faer::Par::Seq,
            n => faer::Par::rayon(n),
        }
    }
}
