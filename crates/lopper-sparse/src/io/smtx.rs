//! DLMC `.smtx`: line 1 `rows, cols, nnz`; line 2 the `rows + 1` row offsets; line 3 the `nnz`
//! column indices (whitespace separated). No values: the file is a sparsity pattern.
use crate::{Csr, Error, Result};
use std::path::Path;

/// A sparsity pattern read from `.smtx`.
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    pub rows: usize,
    pub cols: usize,
    pub row_ptr: Vec<usize>,
    pub col_idx: Vec<u32>,
}

impl Pattern {
    pub fn nnz(&self) -> usize {
        self.col_idx.len()
    }
    /// A validated CSR with this pattern and the given values (one per entry).
    pub fn with_values(&self, values: Vec<f32>) -> Result<Csr> {
        Csr::from_parts(
            self.rows,
            self.cols,
            self.row_ptr.clone(),
            self.col_idx.clone(),
            values,
        )
    }
    /// A CSR with this pattern and values drawn uniformly from [-1, 1) with `seed`.
    pub fn with_random_values(&self, seed: u64) -> Result<Csr> {
        use rand::{Rng, SeedableRng};
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        self.with_values(
            (0..self.nnz())
                .map(|_| r.random_range(-1.0f32..1.0))
                .collect(),
        )
    }
}

fn err(path: &Path, line: usize, detail: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        format: "smtx",
        line,
        detail: detail.into(),
    }
}

fn numbers<T: std::str::FromStr>(path: &Path, line: usize, s: &str) -> Result<Vec<T>> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<T>()
                .map_err(|_| err(path, line, format!("{t:?} is not a non-negative integer")))
        })
        .collect()
}

/// Parses `.smtx` text; `path` names the source in errors. The pattern is validated as CSR, each
/// violation reported at the line it comes from (2: row offsets, 3: column indices) and its row.
/// Lines after the indices must be blank.
pub fn parse(text: &str, path: &Path) -> Result<Pattern> {
    let mut lines = text.lines();
    let header = lines.next().ok_or_else(|| err(path, 1, "empty file"))?;
    let h: Vec<usize> = numbers(path, 1, header)?;
    let [rows, cols, nnz] = h[..] else {
        return Err(err(
            path,
            1,
            format!("expected `rows, cols, nnz`, got {} numbers", h.len()),
        ));
    };
    if cols > u32::MAX as usize {
        return Err(err(
            path,
            1,
            format!("{cols} columns exceed u32 column indices"),
        ));
    }
    let row_ptr: Vec<usize> = numbers(path, 2, lines.next().unwrap_or(""))?;
    if Some(row_ptr.len()) != rows.checked_add(1) {
        return Err(err(
            path,
            2,
            format!(
                "{} row offsets, expected rows + 1 = {}",
                row_ptr.len(),
                rows as u128 + 1
            ),
        ));
    }
    check_offsets(path, &row_ptr, nnz)?;
    let col_idx: Vec<u32> = numbers(path, 3, lines.next().unwrap_or(""))?;
    if col_idx.len() != nnz {
        return Err(err(
            path,
            3,
            format!("{} column indices, header says nnz = {nnz}", col_idx.len()),
        ));
    }
    check_columns(path, &row_ptr, &col_idx, cols)?;
    if let Some((i, l)) = lines.enumerate().find(|(_, l)| !l.trim().is_empty()) {
        let l = l.trim();
        let shown: String = l.chars().take(40).collect();
        let more = if shown.len() < l.len() { "..." } else { "" };
        return Err(err(
            path,
            4 + i,
            format!("unexpected text {shown:?}{more} after the column indices (line 3)"),
        ));
    }
    Ok(Pattern {
        rows,
        cols,
        row_ptr,
        col_idx,
    })
}

/// Line 2: offsets start at 0, never decrease and end at `nnz`.
fn check_offsets(path: &Path, rp: &[usize], nnz: usize) -> Result<()> {
    if rp[0] != 0 {
        return Err(err(
            path,
            2,
            format!("first row offset is {}, expected 0", rp[0]),
        ));
    }
    if let Some(i) = (1..rp.len()).find(|&i| rp[i] < rp[i - 1]) {
        return Err(err(
            path,
            2,
            format!(
                "row offsets decrease at row {}: {} then {}",
                i - 1,
                rp[i - 1],
                rp[i]
            ),
        ));
    }
    let last = rp[rp.len() - 1];
    if last != nnz {
        return Err(err(
            path,
            2,
            format!("last row offset is {last}, header says nnz = {nnz}"),
        ));
    }
    Ok(())
}

/// Line 3: each row's column indices are below `cols`, increasing and distinct (offsets checked).
fn check_columns(path: &Path, rp: &[usize], ci: &[u32], cols: usize) -> Result<()> {
    for (i, w) in rp.windows(2).enumerate() {
        let row = &ci[w[0]..w[1]];
        for (p, &j) in row.iter().enumerate() {
            if j as usize >= cols {
                return Err(err(
                    path,
                    3,
                    format!(
                        "row {i}: column index {j} (entry {}) out of range (cols = {cols})",
                        w[0] + p
                    ),
                ));
            }
            if p > 0 && row[p - 1] >= j {
                let what = if row[p - 1] == j {
                    "duplicate"
                } else {
                    "unsorted"
                };
                return Err(err(
                    path,
                    3,
                    format!(
                        "row {i}: {what} column indices {} then {j} (entries {} and {})",
                        row[p - 1],
                        w[0] + p - 1,
                        w[0] + p
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Reads a `.smtx` file.
pub fn read(path: &Path) -> Result<Pattern> {
    parse(&read_text(path, "smtx")?, path)
}

/// Reads a text file of `format`: bytes that are not UTF-8 are an [`Error::Format`] naming their
/// line and byte offset (`read_to_string` said only "stream did not contain valid UTF-8").
pub(super) fn read_text(path: &Path, format: &'static str) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
        Error::Format {
            path: path.to_path_buf(),
            format,
            line,
            detail: format!("byte {at} is not UTF-8 text"),
        }
    })
}

/// `.smtx` text of a CSR's pattern (its values are not written: the format has none).
pub fn to_string(m: &Csr) -> String {
    let join = |it: &mut dyn Iterator<Item = String>| it.collect::<Vec<_>>().join(" ");
    format!(
        "{}, {}, {}\n{}\n{}\n",
        m.rows(),
        m.cols(),
        m.nnz(),
        join(&mut m.row_ptr().iter().map(|x| x.to_string())),
        join(&mut m.col_idx().iter().map(|x| x.to_string()))
    )
}

/// Writes a CSR's pattern as `.smtx`, atomically.
pub fn write(path: &Path, m: &Csr) -> Result<()> {
    use std::io::Write;
    let s = to_string(m);
    Ok(lopper_tensor::io::write_atomic(path, |w| {
        w.write_all(s.as_bytes())
    })?)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let p = Path::new("t.smtx");
        let pat = parse("2, 5, 3\n0 2 3\n1 4 0\n", p).unwrap();
        assert_eq!(pat.row_ptr, vec![0, 2, 3]);
        let c = pat.with_random_values(1).unwrap();
        assert_eq!(parse(&to_string(&c), p).unwrap(), pat);
        assert_eq!(parse("3, 3, 0\n0 0 0 0\n", p).unwrap().nnz(), 0);
        let e = |s: &str| parse(s, p).unwrap_err().to_string();
        assert!(e("").contains("empty"));
        assert!(e("2, 5\n").contains(":1:"));
        assert!(e("2, 5, 3\n0 2\n1 4 0\n").contains(":2:"));
        assert!(e("2, 5, 3\n0 2 3\n1 4\n").contains(":3:"));
        assert!(e("2, 5, 3\n0 2 3\n1 9 0\n").contains("out of range"));
        assert!(e("2, 5, 3\n0 2 3\n1 x 0\n").contains("\"x\""));
    }

    #[test]
    fn structure_errors_name_their_line_and_row() {
        let p = Path::new("s.smtx");
        let e = |s: &str| parse(s, p).unwrap_err().to_string();
        let has = |s: &str, want: &[&str]| {
            let m = e(s);
            for w in want {
                assert!(m.contains(w), "{m:?} lacks {w:?}");
            }
        };
        // offsets (line 2): not starting at 0, decreasing, not ending at nnz
        has(
            "2, 5, 3\n1 2 3\n1 4 0\n",
            &["s.smtx:2:", "first row offset is 1"],
        );
        has(
            "3, 5, 3\n0 2 1 3\n1 4 0\n",
            &["s.smtx:2:", "decrease at row 1: 2 then 1"],
        );
        has(
            "2, 5, 3\n0 2 2\n1 4 0\n",
            &["s.smtx:2:", "last row offset is 2"],
        );
        // indices (line 3): out of range, unsorted, duplicate, with the row
        has(
            "2, 5, 3\n0 2 3\n1 4 5\n",
            &["s.smtx:3:", "row 1: column index 5", "out of range"],
        );
        has(
            "2, 5, 3\n0 2 3\n4 1 0\n",
            &["s.smtx:3:", "row 0: unsorted column indices 4 then 1"],
        );
        has(
            "2, 5, 3\n0 1 3\n0 2 2\n",
            &["s.smtx:3:", "row 1: duplicate column indices 2 then 2"],
        );
        // header (line 1): columns beyond u32, rows + 1 overflowing
        has("1, 4294967296, 0\n0 0\n", &["s.smtx:1:", "u32"]);
        has(
            "18446744073709551615, 1, 0\n0\n",
            &["s.smtx:2:", "18446744073709551616"],
        );
        // trailing text after the indices: an error at its line; blank lines are fine
        has(
            "2, 5, 3\n0 2 3\n1 4 0\nfoo bar\n",
            &["s.smtx:4:", "\"foo bar\""],
        );
        has("2, 5, 3\n0 2 3\n1 4 0\n\n \n7\n", &["s.smtx:6:", "\"7\""]);
        has("3, 3, 0\n0 0 0 0\n\nx\n", &["s.smtx:4:"]);
        assert_eq!(parse("2, 5, 3\n0 2 3\n1 4 0\n\n  \n", p).unwrap().nnz(), 3);
        assert_eq!(parse("3, 3, 0\n0 0 0 0", p).unwrap().nnz(), 0);
    }

    #[test]
    fn non_utf8_text_is_a_format_error_naming_its_line() {
        // it was an I/O error saying only "stream did not contain valid UTF-8"
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u.smtx");
        std::fs::write(&p, b"2, 5, 3\n0 2 3\n1 \xff 0\n").unwrap();
        let e = read(&p).unwrap_err();
        assert!(matches!(e, Error::Format { line: 3, .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("u.smtx:3: malformed smtx file: byte 16 is not UTF-8 text"),
            "{e}"
        );
        std::fs::write(&p, b"2, 5, 3\n0 2 3\n1 4 0\n").unwrap();
        assert_eq!(read(&p).unwrap().nnz(), 3);
    }

    /// A `rows x cols` CSR whose pattern is `mask` (row-major, cycled), for the writers.
    pub(crate) fn valid(rows: usize, cols: usize, mask: &[bool]) -> Csr {
        let vals: Vec<f32> = (0..rows * cols).map(|x| x as f32 * 0.5 - 3.0).collect();
        let keep: Vec<bool> = (0..rows * cols).map(|x| mask[x % mask.len()]).collect();
        Csr::from_mask(
            lopper_tensor::MatRef::new(&vals, rows, cols).unwrap(),
            &keep,
        )
        .unwrap()
    }

    /// Tokens that are no count, offset or index.
    pub(crate) const BAD: [&str; 9] = [
        "-1",
        "1.5",
        "NaN",
        "1e30",
        "x",
        "",
        "4294967296",
        "18446744073709551616",
        "\u{fffd}",
    ];

    /// The byte ranges of the numbers (runs of digits) in `s`.
    fn digit_runs(s: &str) -> Vec<(usize, usize)> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i > start {
                out.push((start, i));
            } else {
                i += 1;
            }
        }
        out
    }

    /// `text` cut at byte `at` (unless only white space is cut) and with its digit run `run`
    /// replaced by `tok` must both fail `fails` (the parser of a file whose numbers are all sizes
    /// or indices).
    pub(crate) fn cut_and_bad_token_fail(
        text: &str,
        at: usize,
        run: proptest::sample::Index,
        tok: &str,
        fails: impl Fn(&str) -> bool,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let cut = &text[..at];
        if cut.trim_end() != text.trim_end() {
            proptest::prop_assert!(fails(cut), "{:?}", cut);
        }
        let runs = digit_runs(text);
        let (s, e) = runs[run.index(runs.len())];
        let bad = format!("{}{tok}{}", &text[..s], &text[e..]);
        proptest::prop_assert!(fails(&bad), "{:?}", bad);
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Arbitrary bytes, bare or after a header, read from a file: never a panic; bytes that
        /// are not UTF-8 are a format error, and text that reads is a valid pattern.
        #[test]
        fn arbitrary_bytes_never_panic(
            header in proptest::prelude::any::<bool>(),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("a.smtx");
            let mut b = if header { b"2, 5, 3\n".to_vec() } else { Vec::new() };
            b.extend_from_slice(&tail);
            std::fs::write(&p, &b).unwrap();
            match read(&p) {
                Ok(pat) => proptest::prop_assert!(pat.with_values(vec![0.0; pat.nnz()]).is_ok()),
                Err(e) => {
                    if std::str::from_utf8(&b).is_err() {
                        proptest::prop_assert!(matches!(e, Error::Format { .. }), "{}", e);
                    }
                }
            }
        }

        /// A valid file cut short, with a number replaced by a bad token, or with one byte
        /// changed: never a panic; the first two always an error (unless only white space was
        /// cut), and a changed file that still reads is a valid pattern that writes back the same.
        #[test]
        fn mutated_valid_files_never_panic(
            rows in 0usize..6,
            cols in 1usize..10,
            mask in proptest::collection::vec(proptest::prelude::any::<bool>(), 1..20),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            run in proptest::prelude::any::<proptest::sample::Index>(),
            tok in proptest::sample::select(&BAD[..]),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let p = Path::new("m.smtx");
            let good = to_string(&valid(rows, cols, &mask));
            let k = at.index(good.len());
            cut_and_bad_token_fail(&good, k, run, tok, |t| parse(t, p).is_err())?;
            let mut b = good.clone().into_bytes();
            b[k] = byte;
            if let Ok(pat) = parse(&String::from_utf8_lossy(&b), p) {
                let c = pat.with_values(vec![1.0; pat.nnz()]).unwrap();
                proptest::prop_assert_eq!(parse(&to_string(&c), p).unwrap(), pat);
            }
        }
    }
}
