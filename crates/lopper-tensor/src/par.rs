/// Parallelism of a kernel, passed explicitly (faer style).
///
/// Call parallel kernels from a thread of the rayon pool they run on when you can: a call from
/// any other thread hands its work to the pool and sleeps until the pool is done, which cost
/// 12-17 us per call on the 2-core development machine (a quarter of a 512 x 512 x 512 product at
/// 98% sparsity). `lopper train` and `lopper bench` make the main thread one of the global pool's
/// workers (`rayon::ThreadPoolBuilder::use_current_thread`); `ThreadPool::install` does the same
/// for a block of code.
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
