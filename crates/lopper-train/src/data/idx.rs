//! IDX files, the format of MNIST and Fashion-MNIST (<http://yann.lecun.com/exdb/mnist/>):
//!
//! ```text
//! bytes 0..4      magic: 0x00 0x00, element type (0x08 = unsigned byte), rank
//! bytes 4..4+4r   the r dimensions, big-endian u32
//! then            the elements, row-major, one byte each
//! ```
//!
//! Images: magic 0x00000803, dimensions (count, rows, cols). Labels: magic 0x00000801, dimension
//! (count). A file that starts with the gzip magic is decompressed first, whatever its name.
//! Every error names the file and what is wrong; the parsers never panic on any input.
use super::images::Images;
use super::{DataError, read_maybe_gz};
use std::path::{Path, PathBuf};

/// Magic of an IDX file of unsigned-byte images, rank 3.
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of an IDX file of unsigned-byte labels, rank 1.
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;
/// Where Debian's `dataset-fashion-mnist` package installs the four gzip-compressed files.
pub const FASHION_MNIST_DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// The four file names of MNIST and Fashion-MNIST (each may also carry a `.gz` suffix):
/// training images, training labels, test images, test labels.
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];
/// Element type code of unsigned bytes.
const UBYTE: u8 = 0x08;

/// Images of an IDX file: `pixels` is (count, rows, cols) row-major, 0..=255.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Pixel rows per image.
    pub rows: usize,
    /// Pixel columns per image.
    pub cols: usize,
    /// (count, rows, cols) row-major.
    pub pixels: Vec<u8>,
}

/// The dimensions of an unsigned-byte IDX file of `rank` dimensions and its element bytes,
/// checked: magic, rank, header length, element count against the data length.
fn parse_ubyte<'a>(
    bytes: &'a [u8],
    path: &str,
    rank: u8,
    what: &str,
) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    let expected = u32::from(UBYTE) << 8 | u32::from(rank);
    let bad = |detail: String| Err(DataError::format(path, detail));
    let Some(magic) = bytes.first_chunk::<4>() else {
        return bad(format!(
            "truncated header: {} bytes, an IDX file starts with a 4-byte magic",
            bytes.len()
        ));
    };
    let m = u32::from_be_bytes(*magic);
    if magic[0] != 0 || magic[1] != 0 || magic[2] != UBYTE {
        return bad(format!(
            "bad magic 0x{m:08x}: an IDX file of {what} starts with 0x{expected:08x} (unsigned bytes, rank {rank})"
        ));
    }
    if magic[3] != rank {
        return bad(format!(
            "wrong rank {} (magic 0x{m:08x}): {what} have rank {rank} (magic 0x{expected:08x})",
            magic[3]
        ));
    }
    let header = 4 + 4 * usize::from(rank);
    if bytes.len() < header {
        return bad(format!(
            "truncated header: {} bytes, rank {rank} needs {header}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let shape = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" x ");
    let Some(need) = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
        return bad(format!("dimensions {shape} overflow"));
    };
    let data = &bytes[header..];
    if data.len() < need {
        return bad(format!(
            "truncated data: {} bytes after the header, dimensions {shape} need {need}",
            data.len()
        ));
    }
    if data.len() > need {
        return bad(format!(
            "{} bytes after the data: dimensions {shape} need {need}",
            data.len() - need
        ));
    }
    Ok((dims, data))
}

/// Parses an IDX images file already in memory (not compressed); `path` names it in errors.
pub fn parse_idx_images(bytes: &[u8], path: &str) -> Result<IdxImages, DataError> {
    let (dims, data) = parse_ubyte(bytes, path, 3, "images")?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(DataError::format(
            path,
            format!("images of {rows} x {cols} pixels: both must be at least 1"),
        ));
    }
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: data.to_vec(),
    })
}

/// Parses an IDX labels file already in memory (not compressed); `path` names it in errors.
pub fn parse_idx_labels(bytes: &[u8], path: &str) -> Result<Vec<u8>, DataError> {
    let (_, data) = parse_ubyte(bytes, path, 1, "labels")?;
    Ok(data.to_vec())
}

/// Reads an IDX images file (magic 0x00000803), plain or gzip-compressed.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<IdxImages, DataError> {
    let path = path.as_ref();
    parse_idx_images(&read_maybe_gz(path)?, &path.display().to_string())
}

/// Reads an IDX labels file (magic 0x00000801), plain or gzip-compressed.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>, DataError> {
    let path = path.as_ref();
    parse_idx_labels(&read_maybe_gz(path)?, &path.display().to_string())
}

/// The bytes of an IDX images file (uncompressed). Fails if a dimension exceeds u32 or the
/// pixels do not match the dimensions.
pub fn encode_idx_images(images: &IdxImages) -> Result<Vec<u8>, DataError> {
    let dims = [images.count, images.rows, images.cols];
    if dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(images.pixels.len()) {
        return Err(DataError::Invalid(format!(
            "IDX images: {} pixels for {} x {} x {}",
            images.pixels.len(),
            images.count,
            images.rows,
            images.cols
        )));
    }
    encode(IDX_IMAGES_MAGIC, &dims, &images.pixels)
}

/// The bytes of an IDX labels file (uncompressed). Fails beyond 2^32 - 1 labels.
pub fn encode_idx_labels(labels: &[u8]) -> Result<Vec<u8>, DataError> {
    encode(IDX_LABELS_MAGIC, &[labels.len()], labels)
}

fn encode(magic: u32, dims: &[usize], data: &[u8]) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&magic.to_be_bytes());
    for &d in dims {
        let d = u32::try_from(d).map_err(|_| {
            DataError::Invalid(format!("IDX: dimension {d} does not fit in 32 bits"))
        })?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

/// Reads an images file and its labels file into [`Images`] (features = pixel / 255, dim = rows
/// x cols). Errors: either file malformed, counts that differ, a label not below `classes`.
pub fn load_idx_pair(
    images_path: impl AsRef<Path>,
    labels_path: impl AsRef<Path>,
    classes: usize,
    name: impl Into<String>,
) -> Result<Images, DataError> {
    let (ip, lp) = (images_path.as_ref(), labels_path.as_ref());
    let images = read_idx_images(ip)?;
    let labels = read_idx_labels(lp)?;
    if images.count != labels.len() {
        return Err(DataError::format(
            ip.display().to_string(),
            format!(
                "{} images but {} holds {} labels",
                images.count,
                lp.display(),
                labels.len()
            ),
        ));
    }
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|(_, l)| usize::from(**l) >= classes)
    {
        return Err(DataError::format(
            lp.display().to_string(),
            format!("label {i} is {l}, not below {classes} classes"),
        ));
    }
    let features = images
        .pixels
        .iter()
        .map(|&p| f32::from(p) / 255.0)
        .collect();
    Images::new(name, images.rows * images.cols, features, labels, classes)
}

/// A training and a test set read from IDX files.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxPair {
    /// The `train-*` files (60,000 rows for MNIST and Fashion-MNIST).
    pub train: Images,
    /// The `t10k-*` files (10,000 rows).
    pub test: Images,
}

/// `dir/name`, or `dir/name.gz` when only that exists; an Io error naming both otherwise.
fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(DataError::io(
        &plain,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "neither {} nor {} is a file (the four IDX files of MNIST or Fashion-MNIST \
                 belong in data.dir; Debian's dataset-fashion-mnist package installs them in \
                 /usr/share/datasets/fashion-mnist)",
                plain.display(),
                gz.display()
            ),
        ),
    ))
}

fn idx_dataset(dir: &Path, name: &str) -> Result<IdxPair, DataError> {
    let [tri, trl, tei, tel] = MNIST_FILES.map(|f| find(dir, f));
    let (tri, tei) = (tri?, tei?);
    // each set is named by the images file read (plain or .gz: logs say which)
    let (trn, ten) = (
        format!("{name} ({})", tri.display()),
        format!("{name} ({})", tei.display()),
    );
    Ok(IdxPair {
        train: load_idx_pair(tri, trl?, 10, trn)?,
        test: load_idx_pair(tei, tel?, 10, ten)?,
    })
}

/// MNIST from `dir`: the four [`MNIST_FILES`], each plain or `.gz`; 28 x 28 = 784 features in
/// [0, 1], 10 classes.
pub fn mnist(dir: impl AsRef<Path>) -> Result<IdxPair, DataError> {
    idx_dataset(dir.as_ref(), "mnist")
}

/// Fashion-MNIST from `dir` (same file names as MNIST; Debian's `dataset-fashion-mnist` puts them
/// in [`FASHION_MNIST_DEBIAN_DIR`] as `.gz`); 784 features in [0, 1], 10 classes.
pub fn fashion_mnist(dir: impl AsRef<Path>) -> Result<IdxPair, DataError> {
    idx_dataset(dir.as_ref(), "fashion-mnist")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_header_parses() {
        // 2 images of 1 x 3: magic, dims (2, 1, 3) big-endian, 6 pixels
        let mut b = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3];
        b.extend_from_slice(&[0, 1, 2, 253, 254, 255]);
        let im = parse_idx_images(&b, "x").unwrap();
        assert_eq!((im.count, im.rows, im.cols), (2, 1, 3));
        assert_eq!(im.pixels, vec![0, 1, 2, 253, 254, 255]);
        assert_eq!(encode_idx_images(&im).unwrap(), b);
        assert_eq!(
            parse_idx_labels(&[0, 0, 8, 1, 0, 0, 0, 0], "y").unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn a_set_is_named_by_the_file_read_plain_before_gz() {
        let t = tempfile::tempdir().unwrap();
        let im = IdxImages {
            count: 2,
            rows: 1,
            cols: 3,
            pixels: vec![0, 1, 2, 3, 4, 5],
        };
        let (ib, lb) = (
            encode_idx_images(&im).unwrap(),
            encode_idx_labels(&[1, 7]).unwrap(),
        );
        for (f, b) in MNIST_FILES.iter().zip([&ib, &lb, &ib, &lb]) {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, b).unwrap();
            std::fs::write(t.path().join(format!("{f}.gz")), gz.finish().unwrap()).unwrap();
        }
        let p = mnist(t.path()).unwrap();
        let gz = t.path().join("train-images-idx3-ubyte.gz");
        assert_eq!(p.train.name, format!("mnist ({})", gz.display()));
        assert_eq!(p.train.labels, vec![1, 7]);
        // a plain file beside the .gz is the one read, and the name says so
        std::fs::write(t.path().join("train-images-idx3-ubyte"), &ib).unwrap();
        let p = mnist(t.path()).unwrap();
        let plain = t.path().join("train-images-idx3-ubyte");
        assert_eq!(p.train.name, format!("mnist ({})", plain.display()));
        assert!(p.test.name.ends_with("t10k-images-idx3-ubyte.gz)"));
    }

    #[test]
    fn header_errors_say_what() {
        let e = |b: &[u8]| parse_idx_images(b, "f").unwrap_err().to_string();
        assert!(e(&[0, 0, 8]).starts_with("f: truncated header: 3 bytes"));
        assert!(e(&[0, 0, 8, 1, 0, 0, 0, 0]).starts_with("f: wrong rank 1"));
        assert!(e(&[1, 0, 8, 3]).starts_with("f: bad magic 0x01000803"));
        assert!(e(&[0, 0, 0x0b, 3]).starts_with("f: bad magic 0x00000b03"));
        assert!(
            e(&[0, 0, 8, 3, 0, 0, 0, 1])
                .starts_with("f: truncated header: 8 bytes, rank 3 needs 16")
        );
        let big = [
            0, 0, 8, 3, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        ];
        assert!(e(&big).contains("truncated data") || e(&big).contains("overflow"));
        let zero = [0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
        assert!(e(&zero).contains("images of 0 x 5 pixels"));
    }
}
