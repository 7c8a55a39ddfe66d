//! Checked allocation of buffers whose size comes from a file or an argument: a claimed shape that
//! overflows, or needs more memory than the machine has, is an error naming what asked for it,
//! never an abort ("memory allocation of N bytes failed") or a run that the kernel kills later.
use crate::{Error, Result};

/// This machine's physical memory in bytes (`MemTotal` of /proc/meminfo); `None` where unknown.
pub fn physical_memory() -> Option<u64> {
    mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// `MemTotal` of /proc/meminfo text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut t = line["MemTotal:".len()..].split_whitespace();
    let v: u64 = t.next()?.parse().ok()?;
    let unit = match t.next() {
        None => 1,
        Some("kB") => 1024,
        Some(_) => return None,
    };
    v.checked_mul(unit)
}

/// `count` elements of `elem_bytes` each: an error when the product overflows or exceeds the
/// physical memory. `what` names the buffer (e.g. "h.0.mlp.fc.weight expanded to dense").
pub fn check_bytes(what: &str, count: usize, elem_bytes: usize) -> Result<()> {
    let too_big = |need: String| {
        Error::Memory(format!(
            "{what} needs {need}, more than this machine's memory ({})",
            physical_memory().map_or("unknown".into(), human)
        ))
    };
    let bytes = count
        .checked_mul(elem_bytes)
        .ok_or_else(|| too_big(format!("{count} x {elem_bytes} bytes (overflows)")))?;
    if physical_memory().is_some_and(|m| bytes as u64 > m) {
        return Err(too_big(human(bytes as u64)));
    }
    Ok(())
}

/// The number of elements of `shape`, or an error naming `what` when the product overflows.
pub fn elements(what: &str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            Error::Memory(format!(
                "{what}: shape {shape:?} has more elements than fit in memory"
            ))
        })
}

/// A zeroed `Vec<f32>` of `n` elements, after [`check_bytes`]; an allocation the system refuses
/// is an error too.
pub fn zeros_f32(what: &str, n: usize) -> Result<Vec<f32>> {
    check_bytes(what, n, 4)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|e| Error::Memory(format!("{what}: {n} floats: {e}")))?;
    v.resize(n, 0.0);
    Ok(v)
}

/// A zeroed `Vec<f32>` of `n` elements whose memory is written now, for buffers that are read
/// before they are written (optimizer state, accumulators).
///
/// `vec![0.0; n]` takes calloc's lazily mapped zero pages: the first read of such a page maps the
/// shared zero page, and the first write then copies it and flushes the TLB of every other core
/// running the process, an inter-processor interrupt per 4 KiB page (a hypervisor exit in a VM).
/// On the 2-core development VM that made the first AdamW step of the benchmark GPT spend about a
/// quarter of its CPU time in `native_write_msr` (docs/benchmarks.md, 2026-11-30). Written pages
/// fault once, with no flush. Buffers of `1 << 20` elements or more are written by the rayon pool,
/// so that each core takes its share of the faults.
pub fn zeros_written(n: usize) -> Vec<f32> {
    use rayon::prelude::*;
    const PAR_MIN: usize = 1 << 20;
    let mut v: Vec<f32> = Vec::with_capacity(n);
    if n >= PAR_MIN {
        v.spare_capacity_mut()[..n]
            .par_chunks_mut(1 << 16)
            .for_each(|c| {
                c.iter_mut().for_each(|x| {
                    x.write(0.0);
                })
            });
        // SAFETY: the capacity is at least n and every one of the first n elements was just
        // written above.
        unsafe { v.set_len(n) };
    } else {
        v.resize(n, 0.0);
    }
    v
}

fn human(bytes: u64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut x = bytes as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{x:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_written_is_zero_at_every_length() {
        for n in [
            0,
            1,
            17,
            (1 << 16) + 3,
            (1 << 20) - 1,
            1 << 20,
            (1 << 20) + 12_345,
        ] {
            let v = zeros_written(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x.to_bits() == 0), "n = {n}");
        }
        // on a 3-thread pool too (the parallel branch)
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let v = pool.install(|| zeros_written((1 << 21) + 7));
        assert!(v.iter().all(|&x| x.to_bits() == 0));
    }

    #[test]
    fn claimed_sizes_beyond_memory_are_errors() {
        let e = check_bytes("w expanded to dense", usize::MAX, 4).unwrap_err();
        assert!(e.to_string().contains("w expanded to dense"), "{e}");
        assert!(e.to_string().contains("overflows"), "{e}");
        let e = elements("w", &[usize::MAX, 2]).unwrap_err();
        assert!(e.to_string().contains("w: shape"), "{e}");
        assert_eq!(elements("w", &[3, 4, 5]).unwrap(), 60);
        assert_eq!(elements("w", &[]).unwrap(), 1);
        if let Some(m) = physical_memory() {
            // 16 TiB on a machine with less: refused before any allocation
            if m < (16u64 << 40) {
                let e = zeros_f32("h.0.mlp.fc.weight", 1 << 42).unwrap_err();
                let s = e.to_string();
                assert!(s.contains("h.0.mlp.fc.weight needs 16.0 TiB"), "{s}");
            }
        }
        assert_eq!(zeros_f32("small", 5).unwrap(), vec![0.0; 5]);
        assert_eq!(human(1536), "1.5 KiB");
        let t = "MemTotal:       24576000 kB\nMemFree:        1000 kB\n";
        assert_eq!(mem_total(t), Some(24_576_000 * 1024));
        assert_eq!(mem_total("MemFree: 5 kB\n"), None);
        assert_eq!(mem_total("MemTotal: x kB\n"), None);
    }
}
