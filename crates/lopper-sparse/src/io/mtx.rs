//! Matrix Market coordinate files: `%%MatrixMarket matrix coordinate real|integer|pattern
//! general|symmetric`. Indices are 1-based in the file. Symmetric files store one triangle; the reader
//! mirrors off-diagonal entries. Duplicate entries are an error (not summed silently).
use crate::{Csr, Error, Result};
use std::path::Path;

/// The value field of a Matrix Market file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Real,
    Integer,
    Pattern,
}

/// The symmetry of a Matrix Market file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symmetry {
    General,
    Symmetric,
}

fn err(path: &Path, line: usize, detail: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        format: "Matrix Market",
        line,
        detail: detail.into(),
    }
}

/// Parses Matrix Market text into a CSR (pattern files get value 1.0). Returns the field too.
pub fn parse(text: &str, path: &Path) -> Result<(Csr, Field)> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let (_, banner) = lines.next().ok_or_else(|| err(path, 1, "empty file"))?;
    let b: Vec<String> = banner
        .split_whitespace()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if b.len() != 5 || b[0] != "%%matrixmarket" || b[1] != "matrix" {
        return Err(err(
            path,
            1,
            "expected `%%MatrixMarket matrix coordinate <field> <symmetry>`",
        ));
    }
    if b[2] != "coordinate" {
        return Err(err(
            path,
            1,
            format!("format {:?} is not supported (only coordinate)", b[2]),
        ));
    }
    let field = match b[3].as_str() {
        "real" | "double" => Field::Real,
        "integer" => Field::Integer,
        "pattern" => Field::Pattern,
        f => {
            return Err(err(
                path,
                1,
                format!("field {f:?} is not supported (real, integer, pattern)"),
            ));
        }
    };
    let sym = match b[4].as_str() {
        "general" => Symmetry::General,
        "symmetric" => Symmetry::Symmetric,
        s => {
            return Err(err(
                path,
                1,
                format!("symmetry {s:?} is not supported (general, symmetric)"),
            ));
        }
    };
    let mut data = lines.filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('%'));
    let (sl, size) = data
        .next()
        .ok_or_else(|| err(path, 2, "missing size line"))?;
    let s: Vec<usize> = size
        .split_whitespace()
        .map(|t| {
            t.parse()
                .map_err(|_| err(path, sl, format!("{t:?} is not an integer")))
        })
        .collect::<Result<_>>()?;
    let [rows, cols, nnz] = s[..] else {
        return Err(err(path, sl, "expected `rows cols nnz`"));
    };
    if sym == Symmetry::Symmetric && rows != cols {
        return Err(err(
            path,
            sl,
            format!("symmetric matrix must be square, got {rows}x{cols}"),
        ));
    }
    // entries keep their row and column as u32 (a Csr's column index; its transpose's too)
    for (what, v) in [("rows", rows), ("columns", cols)] {
        if v > u32::MAX as usize {
            return Err(err(
                path,
                sl,
                format!("{v} {what}: at most {} are supported", u32::MAX),
            ));
        }
    }
    // the row offsets (rows + 1 of them) are allocated whatever the entries: check them first
    lopper_tensor::mem::check_bytes(&format!("{rows} rows"), rows.saturating_add(1), 8)
        .map_err(|e| err(path, sl, e.to_string()))?;
    // the header's count is not trusted for the allocation: an entry takes at least 4 bytes of text
    let cap = nnz.min(text.len() / 4);
    let mut trip: Vec<(u32, u32, f32, usize)> = Vec::with_capacity(cap.saturating_mul(2));
    let mut count = 0;
    for (ln, line) in data {
        let t: Vec<&str> = line.split_whitespace().collect();
        let want = if field == Field::Pattern { 2 } else { 3 };
        if t.len() != want {
            return Err(err(
                path,
                ln,
                format!("expected {want} fields, got {}", t.len()),
            ));
        }
        let idx = |s: &str, lim: usize, what: &str| -> Result<u32> {
            let v: usize = s
                .parse()
                .map_err(|_| err(path, ln, format!("{what} {s:?} is not an integer")))?;
            if v == 0 || v > lim {
                return Err(err(path, ln, format!("{what} {v} out of range 1..={lim}")));
            }
            Ok((v - 1) as u32)
        };
        let (i, j) = (idx(t[0], rows, "row")?, idx(t[1], cols, "column")?);
        let v: f32 = match field {
            Field::Pattern => 1.0,
            Field::Integer => t[2]
                .parse::<i64>()
                .map_err(|_| err(path, ln, format!("{:?} is not an integer", t[2])))?
                as f32,
            Field::Real => {
                let x = t[2]
                    .parse::<f32>()
                    .map_err(|_| err(path, ln, format!("{:?} is not a number", t[2])))?;
                // a finite number beyond f32 (a float64 file's 1e39) parses to infinity: refused,
                // not stored as inf; an explicit `inf` (as `to_string` writes one) is kept
                let explicit = t[2]
                    .trim_start_matches(['+', '-'])
                    .get(..3)
                    .is_some_and(|s| s.eq_ignore_ascii_case("inf"));
                if x.is_infinite() && !explicit {
                    return Err(err(
                        path,
                        ln,
                        format!("value {} is beyond the range of f32", t[2]),
                    ));
                }
                x
            }
        };
        if sym == Symmetry::Symmetric && j > i {
            return Err(err(
                path,
                ln,
                format!(
                    "symmetric file has an entry above the diagonal ({}, {})",
                    i + 1,
                    j + 1
                ),
            ));
        }
        trip.push((i, j, v, ln));
        if sym == Symmetry::Symmetric && i != j {
            trip.push((j, i, v, ln));
        }
        count += 1;
    }
    if count != nnz {
        return Err(err(
            path,
            sl,
            format!("size line says {nnz} entries, file has {count}"),
        ));
    }
    trip.sort_by_key(|&(i, j, _, _)| (i, j));
    for w in trip.windows(2) {
        if (w[0].0, w[0].1) == (w[1].0, w[1].1) {
            return Err(err(
                path,
                w[1].3,
                format!("duplicate entry ({}, {})", w[1].0 + 1, w[1].1 + 1),
            ));
        }
    }
    let mut row_ptr = Vec::new();
    rows.checked_add(1)
        .and_then(|n| row_ptr.try_reserve_exact(n).ok())
        .ok_or_else(|| {
            err(
                path,
                sl,
                format!("{rows} rows: the row offsets do not fit in memory"),
            )
        })?;
    row_ptr.resize(rows + 1, 0usize);
    for &(i, ..) in &trip {
        row_ptr[i as usize + 1] += 1;
    }
    for i in 0..rows {
        row_ptr[i + 1] += row_ptr[i];
    }
    let col_idx = trip.iter().map(|t| t.1).collect();
    let values = trip.iter().map(|t| t.2).collect();
    let csr = Csr::from_parts(rows, cols, row_ptr, col_idx, values)
        .map_err(|e| err(path, sl, e.to_string()))?;
    Ok((csr, field))
}

/// Reads a Matrix Market file.
pub fn read(path: &Path) -> Result<(Csr, Field)> {
    parse(&super::smtx::read_text(path, "Matrix Market")?, path)
}

/// Matrix Market text (`real general`, or `pattern general`) of a CSR.
pub fn to_string(m: &Csr, field: Field) -> String {
    let mut s = format!(
        "%%MatrixMarket matrix coordinate {} general\n{} {} {}\n",
        match field {
            Field::Pattern => "pattern",
            Field::Integer => "integer",
            Field::Real => "real",
        },
        m.rows(),
        m.cols(),
        m.nnz()
    );
    for i in 0..m.rows() {
        let (c, v) = m.row(i);
        for (&j, &x) in c.iter().zip(v) {
            match field {
                Field::Pattern => s += &format!("{} {}\n", i + 1, j + 1),
                Field::Integer => s += &format!("{} {} {}\n", i + 1, j + 1, x.round() as i64),
                // `{:?}` prints the shortest text that parses back to the same f32
                Field::Real => s += &format!("{} {} {:?}\n", i + 1, j + 1, x),
            }
        }
    }
    s
}

/// Writes a CSR as Matrix Market, atomically.
pub fn write(path: &Path, m: &Csr, field: Field) -> Result<()> {
    use std::io::Write;
    let s = to_string(m, field);
    Ok(lopper_tensor::io::write_atomic(path, |w| {
        w.write_all(s.as_bytes())
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn general_symmetric_pattern_and_round_trip() {
        let p = Path::new("t.mtx");
        let (c, f) = parse(
            "%%MatrixMarket matrix coordinate real general\n% c\n2 3 2\n1 3 1.5\n2 1 -2e-3\n",
            p,
        )
        .unwrap();
        assert_eq!(f, Field::Real);
        assert_eq!(c.to_dense(), vec![0.0, 0.0, 1.5, -2e-3, 0.0, 0.0]);
        assert_eq!(parse(&to_string(&c, Field::Real), p).unwrap().0, c);
        let (s, _) = parse(
            "%%MatrixMarket matrix coordinate integer symmetric\n3 3 2\n1 1 4\n3 2 7\n",
            p,
        )
        .unwrap();
        assert_eq!(
            s.to_dense(),
            vec![4.0, 0.0, 0.0, 0.0, 0.0, 7.0, 0.0, 7.0, 0.0]
        );
        let (q, f) = parse(
            "%%MatrixMarket matrix coordinate pattern general\n2 2 1\n2 2\n",
            p,
        )
        .unwrap();
        assert_eq!((f, q.values()), (Field::Pattern, &[1.0f32][..]));
    }

    #[test]
    fn errors_name_line() {
        let p = Path::new("t.mtx");
        let e = |s: &str| parse(s, p).unwrap_err().to_string();
        assert!(e("hello\n").contains(":1:"));
        assert!(e("%%MatrixMarket matrix array real general\n").contains("coordinate"));
        assert!(e("%%MatrixMarket matrix coordinate complex general\n").contains("complex"));
        assert!(
            e("%%MatrixMarket matrix coordinate real general\n2 2 1\n3 1 1.0\n")
                .contains(":3: malformed Matrix Market file: row 3 out of range")
        );
        assert!(
            e("%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 1.0\n")
                .contains("says 2 entries")
        );
        assert!(
            e("%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 1.0\n1 1 2\n")
                .contains(":4:")
        );
        assert!(
            e("%%MatrixMarket matrix coordinate real general\n2 2 1\n1 1 abc\n")
                .contains("not a number")
        );
        assert!(
            e("%%MatrixMarket matrix coordinate real symmetric\n2 2 1\n1 2 1\n")
                .contains("above the diagonal")
        );
        // sizes from the size line are not allocated blindly
        assert!(
            e("%%MatrixMarket matrix coordinate real general\n2 2 4611686018427387904\n1 1 1\n")
                .contains(":2:")
        );
        // rows and columns are kept as u32: more is refused at the size line, not truncated
        assert!(
            e("%%MatrixMarket matrix coordinate real general\n18446744073709551615 1 0\n")
                .contains(":2: malformed Matrix Market file: 18446744073709551615 rows: at most 4294967295")
        );
        assert!(
            e("%%MatrixMarket matrix coordinate real general\n4294967296 1 0\n")
                .contains("4294967296 rows: at most 4294967295 are supported")
        );
        assert!(
            e("%%MatrixMarket matrix coordinate pattern general\n1 4294967296 0\n").contains(":2:")
        );
        if lopper_tensor::mem::physical_memory().is_some_and(|m| m < 32 << 30) {
            // 2^32 - 1 rows: 32 GiB of row offsets, refused at the size line
            let m = e("%%MatrixMarket matrix coordinate real general\n4294967295 4 1\n1 1 1\n");
            assert!(
                m.contains(":2: malformed Matrix Market file: 4294967295 rows needs"),
                "{m}"
            );
        }
    }

    #[test]
    fn real_values_beyond_f32_are_refused() {
        // a float64 file's 1e39 was read as infinity
        let p = Path::new("r.mtx");
        let head = "%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 1\n";
        for v in ["1e39", "-3.5e38", "1e400"] {
            let e = parse(&format!("{head}2 2 {v}\n"), p)
                .unwrap_err()
                .to_string();
            let want = format!(
                "r.mtx:4: malformed Matrix Market file: value {v} is beyond the range of f32"
            );
            assert!(e.contains(&want), "{e}");
        }
        // the largest f32, an explicit infinity (as the writer prints one) and underflow still read
        for (v, want) in [
            ("3.4028235e38", f32::MAX),
            ("-inf", f32::NEG_INFINITY),
            ("+Infinity", f32::INFINITY),
            ("1e-50", 0.0),
        ] {
            let (c, _) = parse(&format!("{head}2 2 {v}\n"), p).unwrap();
            assert_eq!(c.values()[1], want, "{v}");
        }
    }

    #[test]
    fn non_utf8_text_is_a_format_error_naming_its_line() {
        // it was an I/O error saying only "stream did not contain valid UTF-8"
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u.mtx");
        let mut b = b"%%MatrixMarket matrix coordinate real general\n% \xe9t\xe9\n".to_vec();
        b.extend_from_slice(b"1 1 1\n1 1 2.5\n");
        std::fs::write(&p, &b).unwrap();
        let e = read(&p).unwrap_err();
        assert!(matches!(e, Error::Format { line: 2, .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("u.mtx:2: malformed Matrix Market file: byte 48 is not UTF-8 text"),
            "{e}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Arbitrary bytes, bare or after a banner, read from a file: never a panic; bytes that
        /// are not UTF-8 are a format error, and text that reads writes back to text that reads.
        #[test]
        fn arbitrary_bytes_never_panic(
            banner in proptest::prelude::any::<bool>(),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("a.mtx");
            let mut b = if banner {
                b"%%MatrixMarket matrix coordinate real general\n".to_vec()
            } else {
                Vec::new()
            };
            b.extend_from_slice(&tail);
            std::fs::write(&p, &b).unwrap();
            match read(&p) {
                Ok((c, f)) => proptest::prop_assert!(parse(&to_string(&c, f), &p).is_ok()),
                Err(e) => {
                    if std::str::from_utf8(&b).is_err() {
                        proptest::prop_assert!(matches!(e, Error::Format { .. }), "{}", e);
                    }
                }
            }
        }

        /// A valid file cut short, with a size or index replaced by a bad token, or with one byte
        /// changed: never a panic. In a pattern file (every number a size or an index) the first
        /// two are always an error (unless only white space was cut); a changed file that still
        /// reads writes back the same matrix.
        #[test]
        fn mutated_valid_files_never_panic(
            rows in 0usize..6,
            cols in 1usize..10,
            mask in proptest::collection::vec(proptest::prelude::any::<bool>(), 1..20),
            field in proptest::sample::select(vec![Field::Real, Field::Integer, Field::Pattern]),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            run in proptest::prelude::any::<proptest::sample::Index>(),
            tok in proptest::sample::select(&crate::io::smtx::tests::BAD[..]),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let p = Path::new("m.mtx");
            let m = crate::io::smtx::tests::valid(rows, cols, &mask);
            let pattern = to_string(&m, Field::Pattern);
            let k = at.index(pattern.len());
            crate::io::smtx::tests::cut_and_bad_token_fail(&pattern, k, run, tok, |t| {
                parse(t, p).is_err()
            })?;
            let good = to_string(&m, field);
            // the same cuts of a real or integer file (whose values a cut may leave valid)
            let _ = parse(&good[..at.index(good.len())], p);
            let mut b = good.into_bytes();
            let k = at.index(b.len());
            b[k] = byte;
            if let Ok((c, f)) = parse(&String::from_utf8_lossy(&b), p) {
                let (again, g) = parse(&to_string(&c, f), p).unwrap();
                proptest::prop_assert_eq!(g, f);
                if c.values().iter().all(|x| !x.is_nan()) {
                    proptest::prop_assert_eq!(again, c);
                }
            }
        }
    }
}
