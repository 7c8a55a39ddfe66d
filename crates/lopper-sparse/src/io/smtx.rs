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

/// Parses `.smtx` text; `path` names the source in errors. The pattern is validated as CSR.
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
    let row_ptr: Vec<usize> = numbers(path, 2, lines.next().unwrap_or(""))?;
    if row_ptr.len() != rows + 1 {
        return Err(err(
            path,
            2,
            format!(
                "{} row offsets, expected rows + 1 = {}",
                row_ptr.len(),
                rows + 1
            ),
        ));
    }
    let col_idx: Vec<u32> = if nnz == 0 {
        Vec::new()
    } else {
        numbers(path, 3, lines.next().unwrap_or(""))?
    };
    if col_idx.len() != nnz {
        return Err(err(
            path,
            3,
            format!("{} column indices, header says nnz = {nnz}", col_idx.len()),
        ));
    }
    Csr::from_parts(rows, cols, row_ptr.clone(), col_idx.clone(), vec![0.0; nnz])
        .map_err(|e| err(path, 0, e.to_string()))?;
    Ok(Pattern {
        rows,
        cols,
        row_ptr,
        col_idx,
    })
}

/// Reads a `.smtx` file.
pub fn read(path: &Path) -> Result<Pattern> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
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
mod tests {
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
}
