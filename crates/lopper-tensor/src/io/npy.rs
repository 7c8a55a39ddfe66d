//! `.npy` files (NumPy format versions 1.0-3.0): f32 (`<f4`) and f16 (`<f2`), C order only.
//! Anything else (big-endian, Fortran order, other dtypes, bad header, short data) is an
//! [`Error::Format`] that names the path and the problem.
use crate::{DType, Error, Result, Storage, Tensor};
use half::f16;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

fn fmt_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        format: "npy",
        detail: detail.into(),
    }
}

/// Extracts the value text of `'key':` in a NumPy header dict.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let start = header.find(&pat)? + pat.len();
    let rest = header[start..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// Parses `.npy` bytes; `path` only names the source in errors.
pub fn from_bytes(buf: &[u8], path: &Path) -> Result<Tensor> {
    if buf.len() < 10 || &buf[..6] != MAGIC {
        return Err(fmt_err(path, "missing \\x93NUMPY magic"));
    }
    let major = buf[6];
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([buf[8], buf[9]]) as usize, 10),
        2 | 3 => {
            if buf.len() < 12 {
                return Err(fmt_err(path, "truncated header length"));
            }
            (
                u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize,
                12,
            )
        }
        v => return Err(fmt_err(path, format!("unsupported format version {v}"))),
    };
    let header = buf
        .get(hstart..hstart + hlen)
        .ok_or_else(|| fmt_err(path, "truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| fmt_err(path, "header is not text"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| fmt_err(path, "no 'descr' in header"))?;
    let dtype = match descr.trim_matches(['\'', '"']) {
        "<f4" => DType::F32,
        "<f2" => DType::F16,
        d => {
            return Err(fmt_err(
                path,
                format!("dtype {d} is not supported (only '<f4' and '<f2')"),
            ));
        }
    };
    match dict_value(header, "fortran_order") {
        Some("False") => {}
        Some("True") => return Err(fmt_err(path, "Fortran order is not supported")),
        _ => return Err(fmt_err(path, "no valid 'fortran_order' in header")),
    }
    let shape_s =
        dict_value(header, "shape").ok_or_else(|| fmt_err(path, "no 'shape' in header"))?;
    let inner = shape_s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| fmt_err(path, format!("shape {shape_s} is not a tuple")))?;
    // a Python tuple: `()`, `(3,)`, `(2, 3)` or `(2, 3,)`; only the last item may be empty (after a
    // trailing comma): `(,)` and `(2,,3)` are not tuples
    let mut items: Vec<&str> = inner.split(',').map(str::trim).collect();
    if items.last() == Some(&"") {
        items.pop();
    }
    let shape = items
        .iter()
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| fmt_err(path, format!("bad shape {shape_s}")))?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| fmt_err(path, "shape overflows"))?;
    let data = &buf[hstart + hlen..];
    let need = n
        .checked_mul(dtype.size())
        .ok_or_else(|| fmt_err(path, "shape overflows"))?;
    if data.len() != need {
        return Err(fmt_err(
            path,
            format!(
                "shape {shape:?} needs {need} data bytes, file has {}",
                data.len()
            ),
        ));
    }
    let storage = match dtype {
        DType::F32 => Storage::F32(bytemuck::pod_collect_to_vec(data)),
        DType::F16 => Storage::F16(bytemuck::pod_collect_to_vec::<u8, f16>(data)),
        DType::BF16 => unreachable!("bf16 is not an npy dtype"),
    };
    Tensor::new(&shape, storage)
}

/// Reads an `.npy` file.
pub fn read(path: &Path) -> Result<Tensor> {
    let buf = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(&buf, path)
}

/// Serializes to `.npy` (version 1.0). bf16 has no NumPy dtype and is an error.
pub fn to_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let descr = match t.dtype() {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::BF16 => {
            return Err(Error::invalid(
                "npy::to_bytes",
                "bf16 has no NumPy dtype; convert to f32 first",
            ));
        }
    };
    let shape = match t.shape() {
        [d] => format!("({d},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // version 1.0 has a u16 header length; a longer header (a shape of thousands of axes) takes
    // version 2.0 and a u32, as NumPy does, instead of a truncated length
    let pad = |prefix: usize, header: &str| {
        let total = prefix + header.len() + 1;
        total.next_multiple_of(64) - total
    };
    let v1 = header.len() + 1 + pad(10, &header) <= usize::from(u16::MAX);
    let prefix = if v1 { 10 } else { 12 };
    // pad so that the data starts on a 64-byte boundary, ending with '\n'
    header.push_str(&" ".repeat(pad(prefix, &header)));
    header.push('\n');
    let hlen = u32::try_from(header.len()).map_err(|_| {
        Error::invalid(
            "npy::to_bytes",
            format!(
                "a header of {} bytes exceeds the format's u32 length",
                header.len()
            ),
        )
    })?;
    let mut out = Vec::with_capacity(prefix + header.len() + t.storage().as_bytes().len());
    out.extend_from_slice(MAGIC);
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(hlen as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&hlen.to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(t.storage().as_bytes());
    Ok(out)
}

/// Writes an `.npy` file atomically.
pub fn write(path: &Path, t: &Tensor) -> Result<()> {
    use std::io::Write;
    let bytes = to_bytes(t)?;
    crate::io::write_atomic(path, |w| w.write_all(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_f32_f16_and_shapes() {
        let dir = tempfile::tempdir().unwrap();
        for (i, shape) in [vec![5], vec![2, 3], vec![2, 0, 3], vec![]]
            .into_iter()
            .enumerate()
        {
            let n: usize = shape.iter().product();
            let t = Tensor::from_f32(&shape, (0..n).map(|x| x as f32 - 1.5).collect()).unwrap();
            for dt in [DType::F32, DType::F16] {
                let t = t.to_dtype(dt);
                let p = dir.path().join(format!("{i}-{dt}.npy"));
                write(&p, &t).unwrap();
                let bytes = std::fs::read(&p).unwrap();
                assert_eq!((bytes.len() - t.storage().as_bytes().len()) % 64, 0);
                assert_eq!(read(&p).unwrap(), t);
            }
        }
        assert!(to_bytes(&Tensor::zeros(&[2], DType::BF16)).is_err());
    }

    #[test]
    fn headers_beyond_u16_are_written_as_version_2() {
        // 30000 axes of length 1: a ~90 kB header, more than version 1.0's u16 length holds
        let t = Tensor::from_f32(&vec![1; 30000], vec![2.5]).unwrap();
        let b = to_bytes(&t).unwrap();
        assert_eq!(&b[6..8], &[2, 0]);
        assert_eq!((b.len() - 4) % 64, 0);
        assert_eq!(from_bytes(&b, Path::new("long.npy")).unwrap(), t);
        // a short header stays version 1.0
        assert_eq!(
            &to_bytes(&Tensor::zeros(&[3], DType::F32)).unwrap()[6..8],
            &[1, 0]
        );
    }

    #[test]
    fn rejects_malformed() {
        let p = Path::new("x.npy");
        let good = to_bytes(&Tensor::zeros(&[4], DType::F32)).unwrap();
        assert!(from_bytes(b"nope", p).is_err());
        assert!(from_bytes(&good[..good.len() - 1], p).is_err());
        let replace = |from: &[u8], to: &[u8]| {
            let mut b = good.clone();
            let at = b.windows(from.len()).position(|w| w == from).unwrap();
            b[at..at + to.len()].copy_from_slice(to);
            b
        };
        let e = from_bytes(&replace(b"<f4", b">f4"), p).unwrap_err();
        assert!(e.to_string().contains(">f4"), "{e}");
        let e = from_bytes(&replace(b"False", b"True "), p).unwrap_err();
        assert!(e.to_string().contains("Fortran"), "{e}");
    }

    #[test]
    fn shape_tuples_with_empty_items_are_refused() {
        // `(,)` read as a scalar and `(2,,3)` as (2, 3): not Python tuples, so not NumPy headers
        let p = Path::new("s.npy");
        let file = |shape: &str, data: usize| {
            let h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&[1, 0]);
            b.extend_from_slice(&(h.len() as u16).to_le_bytes());
            b.extend_from_slice(h.as_bytes());
            b.extend_from_slice(&vec![0; 4 * data]);
            b
        };
        for (shape, data) in [("(,)", 1), ("(2,,3)", 6), ("(,3)", 3), ("(2,3,,)", 6)] {
            let e = from_bytes(&file(shape, data), p).unwrap_err().to_string();
            assert!(
                e.contains("s.npy") && e.contains(&format!("bad shape {shape}")),
                "{e}"
            );
        }
        // a trailing comma, spaces and the empty tuple still read
        for (shape, want) in [
            ("(2, 3,)", vec![2, 3]),
            ("( 4 , )", vec![4]),
            ("()", vec![]),
        ] {
            let n = want.iter().product();
            assert_eq!(from_bytes(&file(shape, n), p).unwrap().shape(), &want[..]);
        }
    }

    /// A valid file from the writer.
    fn valid(shape: &[usize], f16: bool) -> Vec<u8> {
        let n = shape.iter().product();
        let t = Tensor::from_f32(shape, (0..n).map(|x| x as f32 * 0.75).collect()).unwrap();
        to_bytes(&t.to_dtype(if f16 { DType::F16 } else { DType::F32 })).unwrap()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Arbitrary bytes, bare or after the magic and a version: an error, never a panic.
        #[test]
        fn arbitrary_bytes_are_errors(
            prefix in 0usize..3,
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let mut b = [&b""[..], b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00"][prefix].to_vec();
            b.extend_from_slice(&tail);
            proptest::prop_assert!(from_bytes(&b, Path::new("f.npy")).is_err());
        }

        /// A valid file cut short, with a wrong header length, or with one byte changed: never a
        /// panic; the first two always an error, and a changed file that still reads has the
        /// file's tail as its data.
        #[test]
        fn mutated_valid_files_never_panic(
            shape in proptest::collection::vec(0usize..4, 0..4),
            f16 in proptest::prelude::any::<bool>(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
            hlen in proptest::prop_oneof![
                proptest::strategy::Just(0u16),
                proptest::strategy::Just(1),
                proptest::strategy::Just(u16::MAX),
                proptest::prelude::any::<u16>(),
            ],
        ) {
            let p = Path::new("f.npy");
            let good = valid(&shape, f16);
            let k = at.index(good.len());
            proptest::prop_assert!(from_bytes(&good[..k], p).is_err());
            if hlen != u16::from_le_bytes([good[8], good[9]]) {
                let mut b = good.clone();
                b[8..10].copy_from_slice(&hlen.to_le_bytes());
                proptest::prop_assert!(from_bytes(&b, p).is_err());
            }
            let mut b = good.clone();
            b[k] = byte;
            if let Ok(t) = from_bytes(&b, p) {
                let data = t.storage().as_bytes();
                proptest::prop_assert_eq!(data, &b[b.len() - data.len()..]);
            }
        }
    }
}
