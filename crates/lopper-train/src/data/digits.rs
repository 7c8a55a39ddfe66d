//! The UCI optical handwritten digits, as scikit-learn ships them (`data/digits.csv.gz`, embedded):
//! 1,797 images of 8x8 pixels with values 0..=16, digits 0..=9 (provenance: `data/README.md`).
//!
//! File format: gzip of a CSV without header, one image per line, `dim + 1` integers: the pixels in
//! row-major order, then the label. Features are pixel / 16, so in [0, 1].
use super::images::Images;
use super::{DataError, gunzip_if_gzip, read_maybe_gz};
use std::path::Path;

/// The embedded file, byte for byte scikit-learn 1.9.1's `sklearn/datasets/data/digits.csv.gz`.
static DIGITS_CSV_GZ: &[u8] = include_bytes!("../../../../data/digits.csv.gz");

/// Pixels per digit image (8 x 8).
pub const DIGITS_DIM: usize = 64;
/// Largest pixel value (a count of on-pixels in a 4x4 block).
pub const DIGITS_MAX: u32 = 16;
/// Digits 0..=9.
pub const DIGITS_CLASSES: usize = 10;

/// The embedded digits: gunzipped and parsed on each call (a few ms), 1,797 rows of 64 features, 10 classes.
pub fn digits_embedded() -> Result<Images, DataError> {
    let path = "data/digits.csv.gz (embedded)";
    let csv = gunzip_if_gzip(DIGITS_CSV_GZ.to_vec(), path)?;
    let mut im = parse_digits_csv(&csv, path)?;
    im.name = "digits".to_string();
    Ok(im)
}

/// A digits CSV from disk, plain or gzip-compressed (recognised by the gzip magic).
pub fn digits_from_file(path: impl AsRef<Path>) -> Result<Images, DataError> {
    let path = path.as_ref();
    let csv = read_maybe_gz(path)?;
    parse_digits_csv(&csv, &path.display().to_string())
}

/// Parses the digits CSV (65 integers a line: 64 pixels in 0..=16, a label in 0..=9).
/// Errors name `path`, the line and the column (both 1-based).
pub fn parse_digits_csv(csv: &[u8], path: &str) -> Result<Images, DataError> {
    parse_pixel_csv(csv, path, DIGITS_DIM, DIGITS_MAX, DIGITS_CLASSES)
}

/// Parses a CSV of `dim` integer pixels in `0..=max` then a label in `0..classes` per line (LF or
/// CRLF; one final empty line allowed), into features `pixel / max`. Errors name `path`, the line
/// and the column (1-based). `dim >= 1`, `max >= 1`, `classes` in 1..=256.
pub fn parse_pixel_csv(
    csv: &[u8],
    path: &str,
    dim: usize,
    max: u32,
    classes: usize,
) -> Result<Images, DataError> {
    if dim == 0 || max == 0 || classes == 0 || classes > 256 {
        return Err(DataError::Invalid(format!(
            "pixel CSV {path}: dim {dim} and max {max} must be at least 1, classes {classes} in 1..=256"
        )));
    }
    let body = csv.strip_suffix(b"\n").unwrap_or(csv);
    if body.is_empty() {
        return Err(DataError::format(path, "empty file: no rows"));
    }
    let lines = body.iter().filter(|&&b| b == b'\n').count() + 1;
    let mut features = Vec::with_capacity(lines.saturating_mul(dim).min(1 << 28));
    let mut labels = Vec::with_capacity(lines);
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let fields = line.iter().filter(|&&b| b == b',').count() + 1;
        if fields != dim + 1 {
            return Err(DataError::format(
                path,
                format!(
                    "line {line_no}: {fields} values, expected {} ({dim} pixels and a label)",
                    dim + 1
                ),
            ));
        }
        // fields by hand: [start, end) between commas (the split iterator is slow unoptimized)
        let mut start = 0;
        for j in 0..=dim {
            let end = line[start..]
                .iter()
                .position(|&b| b == b',')
                .map_or(line.len(), |k| start + k);
            let field = &line[start..end];
            start = end + 1;
            let col = j + 1;
            let value = parse_uint(field).ok_or_else(|| {
                DataError::format(
                    path,
                    format!(
                        "line {line_no}, column {col}: `{}` is not a non-negative integer",
                        shown(field)
                    ),
                )
            })?;
            if j < dim {
                if value > max {
                    return Err(DataError::format(
                        path,
                        format!("line {line_no}, column {col}: pixel {value} is outside 0..={max}"),
                    ));
                }
                features.push(value as f32 / max as f32);
            } else {
                if value as usize >= classes {
                    return Err(DataError::format(
                        path,
                        format!(
                            "line {line_no}, column {col}: label {value} is outside 0..={}",
                            classes - 1
                        ),
                    ));
                }
                labels.push(value as u8);
            }
        }
    }
    Images::new(path, dim, features, labels, classes)
}

/// A decimal integer that fits u32, surrounding spaces or tabs allowed; `None` otherwise.
fn parse_uint(field: &[u8]) -> Option<u32> {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = field.iter().position(|b| !blank(b))?;
    let end = field.iter().rposition(|b| !blank(b))? + 1;
    let mut v: u32 = 0;
    for &b in &field[start..end] {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
    }
    Some(v)
}

/// A field for an error message: lossy UTF-8, at most 24 characters.
fn shown(field: &[u8]) -> String {
    let s = String::from_utf8_lossy(field);
    let mut out: String = s.chars().take(24).collect();
    if s.chars().count() > 24 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_csv_parses_and_scales() {
        // dim 2, max 4: "0,4,1" -> [0, 1], label 1; CRLF and a final newline
        let im = parse_pixel_csv(b"0,4,1\r\n2, 1 ,0\n", "t.csv", 2, 4, 2).unwrap();
        assert_eq!((im.rows, im.dim, im.classes), (2, 2, 2));
        assert_eq!(im.features, vec![0.0, 1.0, 0.5, 0.25]);
        assert_eq!(im.labels, vec![1, 0]);
    }

    #[test]
    fn errors_name_line_and_column() {
        let msg = |csv: &[u8]| {
            parse_pixel_csv(csv, "t.csv", 2, 4, 2)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            msg(b"0,4,1\n0,5,1\n"),
            "t.csv: line 2, column 2: pixel 5 is outside 0..=4"
        );
        assert_eq!(
            msg(b"0,4,2\n"),
            "t.csv: line 1, column 3: label 2 is outside 0..=1"
        );
        assert_eq!(
            msg(b"0,x,1\n"),
            "t.csv: line 1, column 2: `x` is not a non-negative integer"
        );
        assert_eq!(
            msg(b"0,-1,1\n"),
            "t.csv: line 1, column 2: `-1` is not a non-negative integer"
        );
        assert_eq!(
            msg(b"0,1\n"),
            "t.csv: line 1: 2 values, expected 3 (2 pixels and a label)"
        );
        assert_eq!(
            msg(b"0,1,1\n\n0,1,1\n"),
            "t.csv: line 2: 1 values, expected 3 (2 pixels and a label)"
        );
        assert_eq!(msg(b""), "t.csv: empty file: no rows");
        assert_eq!(
            msg(b"0,99999999999,1"),
            "t.csv: line 1, column 2: `99999999999` is not a non-negative integer"
        );
    }
}
