//! Run-time choice of instruction set for the kernels' `#[target_feature]` clones.
use std::sync::atomic::{AtomicU8, Ordering};

/// The instruction set a kernel clone is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// No target features beyond the build's baseline.
    Portable,
    /// AVX2 + FMA (256-bit).
    Avx2,
    /// AVX-512F (512-bit).
    Avx512,
}

static CHOSEN: AtomicU8 = AtomicU8::new(0); // 0 = not yet detected

fn code(i: Isa) -> u8 {
    match i {
        Isa::Portable => 1,
        Isa::Avx2 => 2,
        Isa::Avx512 => 3,
    }
}

/// Whether this CPU can run the clone for `isa`.
pub fn supported(isa: Isa) -> bool {
    match isa {
        Isa::Portable => true,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => false,
    }
}

/// The best supported instruction set, unless `LOPPER_ISA` (`portable`, `avx2`, `avx512`) asks for
/// a lower one (for instruction counts under valgrind, which cannot run AVX-512).
pub fn detect() -> Isa {
    let best = [Isa::Avx512, Isa::Avx2, Isa::Portable]
        .into_iter()
        .find(|&i| supported(i))
        .unwrap_or(Isa::Portable);
    let wanted = match std::env::var("LOPPER_ISA").ok().as_deref() {
        Some("portable") => Isa::Portable,
        Some("avx2") => Isa::Avx2,
        _ => best,
    };
    if supported(wanted) { wanted } else { best }
}

/// The instruction set the kernels use now.
pub fn isa() -> Isa {
    match CHOSEN.load(Ordering::Relaxed) {
        1 => Isa::Portable,
        2 => Isa::Avx2,
        3 => Isa::Avx512,
        _ => {
            let i = detect();
            CHOSEN.store(code(i), Ordering::Relaxed);
            i
        }
    }
}

/// Forces an instruction set (benchmarks and tests compare clones); false if the CPU lacks it.
pub fn set_isa(isa: Isa) -> bool {
    if !supported(isa) {
        return false;
    }
    CHOSEN.store(code(isa), Ordering::Relaxed);
    true
}

/// Defines `$name` as a dispatcher to clones of the `#[inline(always)]` function `$body::<FMA>`
/// compiled with AVX-512, AVX2+FMA (both `FMA = true`: fused multiply-adds), or no extra features
/// (`FMA = false`: separate multiply and add, since a software `fmaf` would crawl), chosen by [`isa`].
macro_rules! multiversion {
    ($vis:vis fn $name:ident($($a:ident : $t:ty),* $(,)?) => $body:ident) => {
        $vis fn $name($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn v512($($a: $t),*) { $body::<true>($($a),*) }
                #[target_feature(enable = "avx2,fma")]
                fn v256($($a: $t),*) { $body::<true>($($a),*) }
                match $crate::kernels::simd::isa() {
                    // SAFETY: `isa()` only returns an ISA that `supported()` confirmed on this CPU.
                    $crate::kernels::simd::Isa::Avx512 => unsafe { v512($($a),*) },
                    // SAFETY: as above.
                    $crate::kernels::simd::Isa::Avx2 => unsafe { v256($($a),*) },
                    $crate::kernels::simd::Isa::Portable => $body::<false>($($a),*),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            $body::<false>($($a),*)
        }
    };
}
pub(crate) use multiversion;

/// `a * b + c`, fused when the clone has FMA.
#[inline(always)]
pub(crate) fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}
