//! The data loaders: the embedded KJV text and UCI digits, text and image sources (shapes, shifted
//! targets, determinism per (seed, step)), IDX files written here (plain and gzip), and every
//! malformed input giving the right `DataError` with its path, never a panic (proptest).
use flate2::Compression;
use flate2::write::GzEncoder;
use lopper_train::Batch;
use lopper_train::data::digits::parse_pixel_csv;
use lopper_train::data::idx::{
    encode_idx_images, encode_idx_labels, load_idx_pair, parse_idx_images, parse_idx_labels,
};
use lopper_train::data::text::decode;
use lopper_train::data::{
    DataError, DataSource, IdxImages, ImageSource, Images, TextData, TextSource, TextSourceConfig,
    digits_embedded, digits_from_file, fashion_mnist, gunzip_if_gzip, mnist, parse_digits_csv,
    read_idx_images, read_idx_labels,
};
use proptest::prelude::*;
use std::io::Write;
use std::path::Path;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn cfg(
    batch: usize,
    context: usize,
    seed: u64,
    val_fraction: f64,
    val_batches: usize,
) -> TextSourceConfig {
    TextSourceConfig {
        batch,
        context,
        seed,
        val_fraction,
        val_batches,
    }
}

fn tokens_of(b: &Batch) -> (&[u32], &[u32], usize, usize) {
    match b {
        Batch::Tokens {
            tokens,
            targets,
            b,
            t,
        } => (tokens, targets, *b, *t),
        other => panic!("expected tokens, got {other:?}"),
    }
}

fn features_of(b: &Batch) -> (&[f32], usize, &[u32]) {
    match b {
        Batch::Features { x, dim, targets } => (x, *dim, targets),
        other => panic!("expected features, got {other:?}"),
    }
}

/// Asserts a `Format` error naming `path` whose detail contains `needle`.
fn assert_format(r: Result<impl std::fmt::Debug, DataError>, path: &Path, needle: &str) {
    match r {
        Err(DataError::Format { path: p, detail }) => {
            assert_eq!(p, path.display().to_string());
            assert!(
                detail.contains(needle),
                "`{detail}` does not contain `{needle}`"
            );
        }
        other => panic!("expected a Format error about `{needle}`, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// text

#[test]
fn embedded_kjv_is_about_a_megabyte_of_ascii_verses() {
    let kjv = TextData::embedded_kjv();
    let b = kjv.bytes();
    assert!((900_000..1_200_000).contains(&b.len()), "{} bytes", b.len());
    assert!(b.is_ascii());
    assert!(b.starts_with(b"Ge1:1 In the beginning God created the heaven and the earth.\n"));
    assert!(b.ends_with(b"Ruth4:22 And Obed begat Jesse, and Jesse begat David.\n"));
    // one verse per line, each `<reference> <text>`
    let lines: Vec<&[u8]> = b
        .strip_suffix(b"\n")
        .unwrap()
        .split(|&c| c == b'\n')
        .collect();
    assert!(lines.len() > 7000, "{} verses", lines.len());
    assert!(lines.iter().all(|l| l.contains(&b':') && l.contains(&b' ')));
}

#[test]
fn split_is_a_prefix_and_a_suffix_without_overlap() {
    for (len, f) in [(1000usize, 0.1), (7, 0.5), (10, 0.05), (1_000_003, 0.3)] {
        let text: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let d = TextData::from_bytes(text.clone(), "t").unwrap();
        let (train, val) = d.split(f).unwrap();
        let want_val = (len as f64 * f).round() as usize;
        assert_eq!(val.len(), want_val, "len {len} f {f}");
        assert_eq!(train.len() + val.len(), len);
        assert_eq!([train, val].concat(), text);
    }
    let kjv = TextData::embedded_kjv();
    let s = TextSource::new(kjv.clone(), cfg(4, 64, 1, 0.1, 2)).unwrap();
    assert_eq!(s.train_part().len() + s.val_part().len(), kjv.len());
    assert_eq!(
        s.val_part().len(),
        (kjv.len() as f64 * 0.1).round() as usize
    );
}

#[test]
fn text_batches_have_shape_and_shifted_targets() {
    let kjv = TextData::embedded_kjv();
    let (b, t) = (5, 33);
    let s = TextSource::new(kjv, cfg(b, t, 42, 0.1, 3)).unwrap();
    for step in [0u64, 1, 17, 1 << 40] {
        let batch = s.train_batch(step).unwrap();
        let (tokens, targets, bb, tt) = tokens_of(&batch);
        assert_eq!((bb, tt, tokens.len(), targets.len()), (b, t, b * t, b * t));
        assert_eq!(batch.examples(), b * t);
        for (r, &start) in s.train_starts(step).iter().enumerate() {
            let window = &s.train_part()[start..start + t + 1];
            let row = &tokens[r * t..(r + 1) * t];
            let trow = &targets[r * t..(r + 1) * t];
            assert!(
                row.iter()
                    .zip(&window[..t])
                    .all(|(&a, &w)| a == u32::from(w))
            );
            assert!(
                trow.iter()
                    .zip(&window[1..])
                    .all(|(&a, &w)| a == u32::from(w))
            );
            // targets are the tokens shifted by one
            assert_eq!(&trow[..t - 1], &row[1..]);
        }
        assert!(tokens.iter().all(|&x| x < 256));
    }
    let vals = s.val_batches().unwrap();
    assert_eq!(vals.len(), 3);
    let starts = s.val_starts();
    for (k, v) in vals.iter().enumerate() {
        let (tokens, targets, bb, tt) = tokens_of(v);
        assert_eq!((bb, tt), (b, t));
        for r in 0..b {
            let w = &s.val_part()[starts[k * b + r]..starts[k * b + r] + t + 1];
            assert_eq!(decode(&tokens[r * t..(r + 1) * t]).as_bytes(), &w[..t]);
            assert_eq!(targets[r * t + t - 1], u32::from(w[t]));
        }
    }
    assert_eq!(starts[0], 0);
    assert_eq!(*starts.last().unwrap(), s.val_part().len() - (t + 1));
}

#[test]
fn text_batches_are_a_pure_function_of_seed_and_step() {
    let mk = |seed| TextSource::new(TextData::embedded_kjv(), cfg(8, 64, seed, 0.1, 2)).unwrap();
    let (a, b) = (mk(3), mk(3));
    // b is asked in another order: the batches must not depend on it
    let from_b: Vec<Batch> = [9u64, 2, 0, 2]
        .iter()
        .map(|&s| b.train_batch(s).unwrap())
        .collect();
    assert_eq!(a.train_batch(9).unwrap(), from_b[0]);
    assert_eq!(a.train_batch(2).unwrap(), from_b[1]);
    assert_eq!(from_b[1], from_b[3]);
    assert_eq!(a.train_batch(0).unwrap(), from_b[2]);
    assert_ne!(a.train_batch(0).unwrap(), a.train_batch(1).unwrap());
    assert_ne!(a.train_batch(0).unwrap(), mk(4).train_batch(0).unwrap());
    assert_eq!(a.val_batches().unwrap(), b.val_batches().unwrap());
    // validation does not depend on the seed
    assert_eq!(a.val_batches().unwrap(), mk(99).val_batches().unwrap());
    // over many steps the windows cover the training part (mean start near the middle)
    let starts: Vec<usize> = (0..500).flat_map(|s| a.train_starts(s)).collect();
    let mean = starts.iter().sum::<usize>() as f64 / starts.len() as f64;
    let mid = a.train_part().len() as f64 / 2.0;
    assert!(
        (mean - mid).abs() < 0.05 * mid,
        "mean start {mean} vs middle {mid}"
    );
    assert!(a.describe().contains("kjv"), "{}", a.describe());
}

#[test]
fn text_config_from_json_with_defaults() {
    let c: TextSourceConfig = serde_json::from_str(r#"{"batch": 4, "seed": 9}"#).unwrap();
    assert_eq!(
        c,
        TextSourceConfig {
            batch: 4,
            seed: 9,
            ..TextSourceConfig::default()
        }
    );
    assert!(serde_json::from_str::<TextSourceConfig>(r#"{"batchsize": 4}"#).is_err());
}

#[test]
fn bad_text_settings_are_errors() {
    let short = TextData::from_bytes(b"abcdefghij".to_vec(), "ten").unwrap();
    let invalid = |r: Result<TextSource, DataError>, needle: &str| match r {
        Err(DataError::Invalid(m)) => assert!(m.contains(needle), "`{m}` lacks `{needle}`"),
        other => panic!("expected Invalid about `{needle}`, got {other:?}"),
    };
    invalid(
        TextSource::new(short.clone(), cfg(1, 10, 0, 0.5, 1)),
        "shorter than one window",
    );
    invalid(
        TextSource::new(short.clone(), cfg(1, 5, 0, 0.5, 1)),
        "each part needs one window",
    );
    for f in [0.0, 1.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
        invalid(
            TextSource::new(short.clone(), cfg(1, 2, 0, f, 1)),
            "outside (0, 1)",
        );
    }
    invalid(
        TextSource::new(short.clone(), cfg(1, 2, 0, 0.01, 1)),
        "both must be non-empty",
    );
    invalid(
        TextSource::new(short.clone(), cfg(0, 2, 0, 0.5, 1)),
        "at least 1",
    );
    invalid(
        TextSource::new(short.clone(), cfg(1, 0, 0, 0.5, 1)),
        "at least 1",
    );
    invalid(TextSource::new(short, cfg(1, 2, 0, 0.5, 0)), "at least 1");
    assert!(matches!(
        TextData::from_bytes(Vec::new(), "e"),
        Err(DataError::Invalid(_))
    ));
}

#[test]
fn text_files_plain_gzip_empty_and_missing() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("a.txt");
    let gz = dir.path().join("a.txt.gz");
    let empty = dir.path().join("empty.txt");
    let missing = dir.path().join("missing.txt");
    let body = "Ruth 1:1 Now it came to pass\n".repeat(40);
    std::fs::write(&plain, &body).unwrap();
    std::fs::write(&gz, gzip(body.as_bytes())).unwrap();
    std::fs::write(&empty, b"").unwrap();
    for p in [&plain, &gz] {
        let d = TextData::from_file(p).unwrap();
        assert_eq!(d.bytes(), body.as_bytes());
        assert_eq!(d.name(), p.display().to_string());
    }
    assert_format(TextData::from_file(&empty), &empty, "empty file");
    match TextData::from_file(&missing) {
        Err(DataError::Io { path, .. }) => assert_eq!(path, missing.display().to_string()),
        other => panic!("expected Io, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// digits and images

#[test]
fn embedded_digits_are_the_uci_test_set() {
    let d = digits_embedded().unwrap();
    assert_eq!((d.rows, d.dim, d.classes), (1797, 64, 10));
    assert_eq!(d.features.len(), 1797 * 64);
    assert!(d.features.iter().all(|&x| (0.0..=1.0).contains(&x)));
    // every pixel value is k / 16
    assert!(d.features.iter().all(|&x| (x * 16.0).fract() == 0.0));
    let counts = d.class_counts();
    assert_eq!(counts.iter().sum::<usize>(), 1797);
    assert!(
        counts.iter().all(|&c| (160..=200).contains(&c)),
        "{counts:?}"
    );
    // scikit-learn's first digit: a 0, first row of pixels 0 0 5 13 9 1 0 0
    assert_eq!(d.labels[0], 0);
    let row0: Vec<f32> = d.row(0)[..8].iter().map(|x| x * 16.0).collect();
    assert_eq!(row0, vec![0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]);
    // the pixels are not all alike: mean intensity of a digit image is a few /16
    let mean = d.features.iter().sum::<f32>() / d.features.len() as f32;
    assert!((0.2..0.4).contains(&mean), "mean {mean}");
}

/// `rows` images of 2 features whose first feature is the row index, labels r % classes.
fn indexed(rows: usize, classes: usize) -> Images {
    let features = (0..rows).flat_map(|r| [r as f32, 0.5]).collect();
    let labels = (0..rows).map(|r| (r % classes) as u8).collect();
    Images::new("indexed", 2, features, labels, classes).unwrap()
}

#[test]
fn split_is_stratified_disjoint_and_deterministic() {
    let d = digits_embedded().unwrap();
    let (tr, va) = d.split(0.2, 7).unwrap();
    assert_eq!(tr.rows + va.rows, 1797);
    for (c, &n) in d.class_counts().iter().enumerate() {
        let want = (n as f64 * 0.2).round() as usize;
        assert_eq!(va.class_counts()[c], want, "class {c}");
        assert_eq!(tr.class_counts()[c], n - want);
    }
    assert_eq!(d.split(0.2, 7).unwrap(), (tr.clone(), va.clone()));
    assert_ne!(d.split(0.2, 8).unwrap().1, va);

    let im = indexed(103, 4);
    let (tr, va) = im.split(0.3, 1).unwrap();
    let mut ids: Vec<usize> = tr
        .features
        .chunks(2)
        .chain(va.features.chunks(2))
        .map(|r| r[0] as usize)
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..103).collect::<Vec<_>>(),
        "every row in exactly one part"
    );
    for part in [&tr, &va] {
        for r in 0..part.rows {
            assert_eq!(
                usize::from(part.labels[r]),
                part.row(r)[0] as usize % 4,
                "label stays with its row"
            );
        }
    }
    assert!(matches!(im.split(0.0, 1), Err(DataError::Invalid(_))));
    assert!(matches!(im.split(1.0, 1), Err(DataError::Invalid(_))));
    assert!(matches!(
        indexed(3, 3).split(0.1, 1),
        Err(DataError::Invalid(_))
    ));
}

#[test]
fn image_source_batches_are_deterministic_epochs() {
    let d = digits_embedded().unwrap();
    let (tr, va) = d.split(0.2, 0).unwrap();
    let (ntr, nva) = (tr.rows, va.rows);
    let s = ImageSource::new(tr.clone(), va.clone(), 50, 11).unwrap();
    let s2 = ImageSource::new(tr.clone(), va.clone(), 50, 11).unwrap();
    let b = s.train_batch(3).unwrap();
    let (x, dim, targets) = features_of(&b);
    assert_eq!((x.len(), dim, targets.len()), (50 * 64, 64, 50));
    for (i, &r) in s.train_rows(3).iter().enumerate() {
        assert_eq!(&x[i * 64..(i + 1) * 64], tr.row(r));
        assert_eq!(targets[i], u32::from(tr.labels[r]));
    }
    // order of calls does not matter, across epoch boundaries too
    let later = s2.train_batch(1000).unwrap();
    assert_eq!(s2.train_batch(3).unwrap(), b);
    assert_eq!(s.train_batch(1000).unwrap(), later);
    assert_ne!(s.train_batch(4).unwrap(), b);
    let other_seed = ImageSource::new(tr.clone(), va.clone(), 50, 12).unwrap();
    let via = ImageSource::split_from(&d, 0.2, 50, 0).unwrap();
    assert_eq!((via.train(), via.val()), (&tr, &va));
    assert_ne!(other_seed.train_batch(3).unwrap(), b);
    // validation: the rows in order, 50 at a time, the last one shorter
    let vals = s.val_batches().unwrap();
    assert_eq!(vals.len(), nva.div_ceil(50));
    assert_eq!(vals.iter().map(|v| v.examples()).sum::<usize>(), nva);
    assert_eq!(vals, s2.val_batches().unwrap());
    assert!(
        s.describe()
            .contains(&format!("train {ntr} / validation {nva}")),
        "{}",
        s.describe()
    );
}

#[test]
fn digits_csv_files_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let row = |label: u8| {
        let mut v: Vec<String> = (0..64).map(|i| (i % 17).to_string()).collect();
        v.push(label.to_string());
        v.join(",")
    };
    let good = format!("{}\n{}\n", row(3), row(9));
    let plain = dir.path().join("d.csv");
    let gz = dir.path().join("d.csv.gz");
    std::fs::write(&plain, &good).unwrap();
    std::fs::write(&gz, gzip(good.as_bytes())).unwrap();
    for p in [&plain, &gz] {
        let im = digits_from_file(p).unwrap();
        assert_eq!((im.rows, im.dim, im.labels.clone()), (2, 64, vec![3, 9]));
        assert_eq!(im.row(1)[16], 16.0 / 16.0);
    }
    let bad = dir.path().join("bad.csv");
    let write_bad = |text: String| std::fs::write(&bad, text).unwrap();
    write_bad(format!("{}\n{}\n", row(3), row(3).replacen("16", "17", 1)));
    assert_format(
        digits_from_file(&bad),
        &bad,
        "line 2, column 17: pixel 17 is outside 0..=16",
    );
    write_bad(format!("{}\n", row(3).replacen("5", "five", 1)));
    assert_format(
        digits_from_file(&bad),
        &bad,
        "line 1, column 6: `five` is not",
    );
    write_bad(format!("{}\n", row(10)));
    assert_format(
        digits_from_file(&bad),
        &bad,
        "line 1, column 65: label 10 is outside 0..=9",
    );
    write_bad(format!("{},0\n", row(1)));
    assert_format(
        digits_from_file(&bad),
        &bad,
        "line 1: 66 values, expected 65",
    );
    std::fs::write(&bad, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
    assert_format(digits_from_file(&bad), &bad, "gzip");
}

// ---------------------------------------------------------------------------------------------
// IDX

/// Hand-built IDX bytes (independent of the crate's encoder): magic, big-endian dims, data.
fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// `n` images of `h` x `w` with pixel (i, y, x) = (i * 31 + y * 7 + x) mod 256, labels i mod 10.
fn idx_set(n: u32, h: u32, w: u32) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..n * h * w)
        .map(|k| {
            let (i, y, x) = (k / (h * w), k / w % h, k % w);
            ((i * 31 + y * 7 + x) % 256) as u8
        })
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    (
        idx_bytes(0x803, &[n, h, w], &pixels),
        idx_bytes(0x801, &[n], &labels),
        pixels,
    )
}

#[test]
fn idx_round_trip_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    // awkward shape: 3 x 5 images, 13 of them
    let (img, lab, pixels) = idx_set(13, 3, 5);
    for (name, imgb, labb) in [
        ("plain", img.clone(), lab.clone()),
        ("gz", gzip(&img), gzip(&lab)),
    ] {
        let ip = dir.path().join(format!("{name}-images"));
        let lp = dir.path().join(format!("{name}-labels"));
        std::fs::write(&ip, &imgb).unwrap();
        std::fs::write(&lp, &labb).unwrap();
        let im = read_idx_images(&ip).unwrap();
        assert_eq!((im.count, im.rows, im.cols), (13, 3, 5));
        assert_eq!(im.pixels, pixels);
        assert_eq!(encode_idx_images(&im).unwrap(), img);
        let labels = read_idx_labels(&lp).unwrap();
        assert_eq!(labels, (0..13).map(|i| (i % 10) as u8).collect::<Vec<_>>());
        assert_eq!(encode_idx_labels(&labels).unwrap(), lab);
        let set = load_idx_pair(&ip, &lp, 10, "tiny").unwrap();
        assert_eq!((set.rows, set.dim, set.classes), (13, 15, 10));
        assert!(
            set.features
                .iter()
                .zip(&pixels)
                .all(|(&f, &p)| f == f32::from(p) / 255.0)
        );
    }
}

#[test]
fn mnist_and_fashion_mnist_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (tri, trl, _) = idx_set(20, 4, 4);
    let (tei, tel, _) = idx_set(7, 4, 4);
    // a mix of plain and .gz names, as either layout may appear
    std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), gzip(&tri)).unwrap();
    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), &trl).unwrap();
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), &tei).unwrap();
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte.gz"), gzip(&tel)).unwrap();
    for pair in [
        mnist(dir.path()).unwrap(),
        fashion_mnist(dir.path()).unwrap(),
    ] {
        assert_eq!((pair.train.rows, pair.train.dim), (20, 16));
        assert_eq!((pair.test.rows, pair.test.dim), (7, 16));
        assert_eq!(pair.test.labels, vec![0, 1, 2, 3, 4, 5, 6]);
        assert!(pair.train.name.ends_with("train-images-idx3-ubyte.gz)"));
        assert!(pair.test.name.ends_with("t10k-images-idx3-ubyte)"));
    }
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    match mnist(dir.path()) {
        Err(DataError::Io { path, source }) => {
            assert!(path.ends_with("t10k-labels-idx1-ubyte"), "{path}");
            assert!(source.to_string().contains(".gz"), "{source}");
        }
        other => panic!("expected Io for the missing labels, got {other:?}"),
    }
}

#[test]
fn malformed_idx_files_name_path_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    let (img, lab, _) = idx_set(4, 2, 3);
    let write = |b: &[u8]| std::fs::write(&p, b).unwrap();

    let mut bad_magic = img.clone();
    bad_magic[2] = 0x09;
    write(&bad_magic);
    assert_format(read_idx_images(&p), &p, "bad magic 0x00000903");
    write(&lab);
    assert_format(read_idx_images(&p), &p, "wrong rank 1");
    write(&img);
    assert_format(read_idx_labels(&p), &p, "wrong rank 3");
    write(&img[..2]);
    assert_format(read_idx_images(&p), &p, "truncated header: 2 bytes");
    write(&img[..10]);
    assert_format(
        read_idx_images(&p),
        &p,
        "truncated header: 10 bytes, rank 3 needs 16",
    );
    write(&img[..img.len() - 1]);
    assert_format(
        read_idx_images(&p),
        &p,
        "truncated data: 23 bytes after the header, dimensions 4 x 2 x 3 need 24",
    );
    write(&[img.as_slice(), &[0]].concat());
    assert_format(read_idx_images(&p), &p, "1 bytes after the data");
    write(&gzip(&img[..img.len() - 5]));
    assert_format(read_idx_images(&p), &p, "truncated data");
    let gz = gzip(&img);
    write(&gz[..gz.len() / 2]);
    assert_format(read_idx_images(&p), &p, "gzip");

    // counts that differ: 4 images, 5 labels
    let ip = dir.path().join("images");
    let lp = dir.path().join("labels");
    std::fs::write(&ip, &img).unwrap();
    std::fs::write(&lp, idx_bytes(0x801, &[5], &[0, 1, 2, 3, 4])).unwrap();
    assert_format(
        load_idx_pair(&ip, &lp, 10, "x"),
        &ip,
        &format!("4 images but {} holds 5 labels", lp.display()),
    );
    // a label beyond the classes
    std::fs::write(&lp, idx_bytes(0x801, &[4], &[0, 1, 10, 3])).unwrap();
    assert_format(load_idx_pair(&ip, &lp, 10, "x"), &lp, "label 2 is 10");
    // missing file
    match read_idx_images(dir.path().join("nope")) {
        Err(e @ DataError::Io { .. }) => assert!(e.path().unwrap().ends_with("nope")),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn real_fashion_mnist_when_present() {
    // Not committed (30 MB): read from LOPPER_FASHION_MNIST or Debian's install folder.
    let dir = std::env::var("LOPPER_FASHION_MNIST")
        .unwrap_or_else(|_| lopper_train::data::idx::FASHION_MNIST_DEBIAN_DIR.to_string());
    if !Path::new(&dir).join("t10k-labels-idx1-ubyte.gz").exists()
        && !Path::new(&dir).join("t10k-labels-idx1-ubyte").exists()
    {
        println!("skipped: no Fashion-MNIST in {dir} (set LOPPER_FASHION_MNIST)");
        return;
    }
    let pair = fashion_mnist(&dir).unwrap();
    assert_eq!(
        (pair.train.rows, pair.train.dim, pair.test.rows),
        (60_000, 784, 10_000)
    );
    assert_eq!(pair.train.class_counts(), vec![6000; 10]);
    assert_eq!(pair.test.class_counts(), vec![1000; 10]);
}

// ---------------------------------------------------------------------------------------------
// no panics on any input

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn idx_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_idx_images(&bytes, "p");
        let _ = parse_idx_labels(&bytes, "p");
        let _ = gunzip_if_gzip([&[0x1f, 0x8b][..], &bytes].concat(), "p");
    }

    #[test]
    fn idx_headers_with_random_dims_never_panic(
        rank in 0u8..5, magic2 in prop_oneof![Just(8u8), any::<u8>()],
        dims in proptest::collection::vec(prop_oneof![0u32..6, any::<u32>()], 0..5),
        data in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut b = vec![0, 0, magic2, rank];
        for d in &dims { b.extend_from_slice(&d.to_be_bytes()); }
        b.extend_from_slice(&data);
        if let Ok(im) = parse_idx_images(&b, "p") {
            prop_assert_eq!(im.pixels.len(), im.count * im.rows * im.cols);
        }
        if let Ok(l) = parse_idx_labels(&b, "p") {
            prop_assert_eq!(l.len() + 8, b.len());
        }
    }

    #[test]
    fn idx_round_trips_any_shape(
        count in 0usize..6, rows in 1usize..6, cols in 1usize..6, seed in any::<u8>(), gz in any::<bool>(),
    ) {
        let pixels: Vec<u8> = (0..count * rows * cols).map(|k| (k as u8).wrapping_mul(37) ^ seed).collect();
        let im = IdxImages { count, rows, cols, pixels };
        let labels: Vec<u8> = (0..count).map(|i| (i as u8) ^ seed).collect();
        let (mut ib, mut lb) = (encode_idx_images(&im).unwrap(), encode_idx_labels(&labels).unwrap());
        prop_assert_eq!(ib.len(), 16 + count * rows * cols);
        if gz {
            ib = gzip(&ib);
            lb = gzip(&lb);
        }
        let ib = gunzip_if_gzip(ib, "i").unwrap();
        let lb = gunzip_if_gzip(lb, "l").unwrap();
        prop_assert_eq!(parse_idx_images(&ib, "i").unwrap(), im);
        prop_assert_eq!(parse_idx_labels(&lb, "l").unwrap(), labels);
    }

    #[test]
    fn csv_parser_never_panics(
        bytes in proptest::collection::vec(prop_oneof![Just(b','), Just(b'\n'), Just(b'1'), Just(b'6'), any::<u8>()], 0..300),
    ) {
        let _ = parse_digits_csv(&bytes, "p");
        if let Ok(im) = parse_pixel_csv(&bytes, "p", 2, 16, 10) {
            prop_assert_eq!(im.features.len(), 2 * im.rows);
        }
    }

    #[test]
    fn text_sources_fit_or_refuse(len in 1usize..400, b in 1usize..5, t in 1usize..40, f in 0.0f64..1.0, step in any::<u64>()) {
        let text: Vec<u8> = (0..len).map(|i| (i % 256) as u8).collect();
        let data = TextData::from_bytes(text, "p").unwrap();
        if let Ok(s) = TextSource::new(data, cfg(b, t, 1, f, 2)) {
            let batch = s.train_batch(step).unwrap();
            let (tokens, targets, _, _) = tokens_of(&batch);
            prop_assert_eq!(tokens.len(), b * t);
            // consecutive bytes: target = token + 1 (mod 256) everywhere
            prop_assert!(tokens.iter().zip(targets).all(|(&a, &c)| c == (a + 1) % 256));
            prop_assert!(s.train_starts(step).iter().all(|&x| x + t < s.train_part().len()));
            prop_assert!(s.val_starts().iter().all(|&x| x + t < s.val_part().len()));
            prop_assert_eq!(s.val_batches().unwrap().len(), 2);
        }
    }

    #[test]
    fn image_batches_stay_in_range(rows in 1usize..60, batch in 1usize..60, step in any::<u64>(), seed in any::<u64>()) {
        let tr = indexed(rows, 3);
        let r = ImageSource::new(tr, indexed(2, 3), batch, seed);
        if batch > rows {
            prop_assert!(matches!(r, Err(DataError::Invalid(_))));
        } else {
            let s = r.unwrap();
            let b = s.train_batch(step).unwrap();
            let (x, dim, targets) = features_of(&b);
            prop_assert_eq!((x.len(), dim, targets.len()), (2 * batch, 2, batch));
            prop_assert!(x.chunks(2).all(|r| (r[0] as usize) < rows));
        }
    }
}

/// Timings of the loaders (ignored by default; run with `--ignored --nocapture`). Medians of a
/// few repetitions; Fashion-MNIST only when present (LOPPER_FASHION_MNIST).
#[test]
#[ignore]
fn timings() {
    use std::time::Instant;
    fn median_us(reps: usize, mut f: impl FnMut()) -> f64 {
        let mut v: Vec<f64> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v[reps / 2]
    }
    let us = median_us(21, || {
        digits_embedded().unwrap();
    });
    println!("digits_embedded (gunzip + parse 1797 x 65): {us:.0} us");
    let gz = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/digits.csv.gz"
    ))
    .unwrap();
    let mut csv = Vec::new();
    let us = median_us(21, || {
        csv = gunzip_if_gzip(gz.clone(), "digits").unwrap();
    });
    println!(
        "  of which gunzip ({} -> {} bytes): {us:.0} us",
        gz.len(),
        csv.len()
    );
    let us = median_us(21, || {
        parse_digits_csv(&csv, "digits").unwrap();
    });
    println!("  of which parse: {us:.0} us");
    let s = TextSource::new(TextData::embedded_kjv(), cfg(8, 128, 1, 0.1, 8)).unwrap();
    let mut step = 0;
    let us = median_us(201, || {
        step += 1;
        s.train_batch(step).unwrap();
    });
    println!("TextSource::train_batch b=8 t=128: {us:.1} us");
    let us = median_us(21, || {
        s.val_batches().unwrap();
    });
    println!("TextSource::val_batches 8 x (8 x 128): {us:.1} us");
    let dir = std::env::var("LOPPER_FASHION_MNIST")
        .unwrap_or_else(|_| lopper_train::data::idx::FASHION_MNIST_DEBIAN_DIR.to_string());
    if !Path::new(&dir).is_dir() {
        println!("skipped Fashion-MNIST: no folder {dir}");
        return;
    }
    let us = median_us(3, || {
        fashion_mnist(&dir).unwrap();
    });
    println!(
        "fashion_mnist (gunzip + parse 70,000 x 784): {:.0} ms",
        us / 1e3
    );
    let pair = fashion_mnist(&dir).unwrap();
    let src = ImageSource::new(pair.train, pair.test, 128, 3).unwrap();
    // steps of one epoch (cached permutation) vs the first step of each new epoch (fresh one)
    let mut step = 0;
    let cached = median_us(201, || {
        step += 1;
        src.train_batch(step).unwrap();
    });
    let per_epoch = 60_000 / 128 + 1;
    let mut epoch = 10;
    let fresh = median_us(21, || {
        epoch += 1;
        src.train_batch(epoch * per_epoch as u64 * 3).unwrap();
    });
    println!(
        "ImageSource::train_batch b=128 dim=784: {cached:.0} us in an epoch, {fresh:.0} us with a new epoch's permutation"
    );
}
