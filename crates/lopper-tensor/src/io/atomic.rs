use crate::{Error, Result};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes a file atomically: `write` fills a temporary file in the same folder, which is synced and
/// renamed over `path` only when everything succeeded (then the folder is synced too, so the rename
/// survives a crash). On any error, or a panic in `write`, the temporary file is removed and `path`
/// is left as it was (absent, or the old file), never half-written.
///
/// A symbolic link is written through: its target is replaced and the link stays. An existing
/// `path` that is not a regular file (a folder, a device such as /dev/null, a FIFO) is refused,
/// since the rename would replace it.
pub fn write_atomic<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
{
    let target = target_of(path)?;
    let path = target.as_path();
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        Error::invalid("write_atomic", format!("{} names no file", path.display()))
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    // removes the temporary file unless it was renamed: on an error, and also when `write` panics
    let guard = RemoveOnDrop(&tmp);
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        drop(w);
        std::fs::rename(&tmp, path)
    })();
    match result {
        Ok(()) => {
            std::mem::forget(guard);
            // the rename is durable once the folder's entry is on disk (a crash right after it could
            // otherwise leave the old file); a file system that cannot sync a folder is not an error
            #[cfg(unix)]
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(e) => Err(io_err(e)),
    }
}

/// Removes a file when dropped (the temporary file of a write that did not finish).
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// Checks, before any work is spent, that [`write_atomic`] could write `path`: absent, a regular
/// file, or a link to one (the folder's writability is only known when writing).
pub fn check_output(path: &Path) -> Result<()> {
    target_of(path).map(|_| ())
}

/// Where a write to `path` goes: `path` itself when it is absent or a regular file, the file a
/// symbolic link points to, and an error for anything else.
fn target_of(path: &Path) -> Result<std::path::PathBuf> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path.to_path_buf()),
        Err(e) => return Err(io_err(e)),
        Ok(m) => m,
    };
    let (target, meta) = if meta.file_type().is_symlink() {
        let t = std::fs::canonicalize(path).map_err(|e| {
            Error::invalid(
                "write",
                format!(
                    "{} is a symbolic link whose target cannot be resolved ({e})",
                    path.display()
                ),
            )
        })?;
        let m = std::fs::metadata(&t).map_err(io_err)?;
        (t, m)
    } else {
        (path.to_path_buf(), meta)
    };
    if !meta.is_file() {
        return Err(Error::invalid(
            "write",
            format!(
                "{} exists and is not a regular file (a folder, device or pipe); not replacing it",
                target.display()
            ),
        ));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        let r = write_atomic(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(r.is_err());
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomic(&p, |w| w.write_all(b"ok")).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"ok");
        // a writer that panics: the old file stays and no temporary file is left
        let r = std::panic::catch_unwind(|| {
            write_atomic(&p, |w| {
                w.write_all(b"half")?;
                w.flush()?;
                panic!("the writer failed")
            })
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"ok");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn links_are_written_through_and_special_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        // a folder is refused and left alone
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = write_atomic(&sub, |w| w.write_all(b"x")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(sub.is_dir());
        #[cfg(unix)]
        {
            // a symbolic link: the target gets the bytes, the link stays a link
            let target = sub.join("real.bin");
            std::fs::write(&target, b"old").unwrap();
            let link = dir.path().join("link.bin");
            std::os::unix::fs::symlink(&target, &link).unwrap();
            write_atomic(&link, |w| w.write_all(b"new")).unwrap();
            assert!(
                std::fs::symlink_metadata(&link)
                    .unwrap()
                    .file_type()
                    .is_symlink()
            );
            assert_eq!(std::fs::read(&target).unwrap(), b"new");
            // a dangling link is an error naming it
            let dangling = dir.path().join("dangling.bin");
            std::os::unix::fs::symlink(dir.path().join("missing"), &dangling).unwrap();
            let e = write_atomic(&dangling, |w| w.write_all(b"x")).unwrap_err();
            assert!(e.to_string().contains("dangling.bin"), "{e}");
            // a FIFO (like a device) is refused, not replaced by a regular file
            let fifo = dir.path().join("fifo");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            if made.is_ok_and(|s| s.success()) {
                let e = write_atomic(&fifo, |w| w.write_all(b"x")).unwrap_err();
                assert!(e.to_string().contains("not a regular file"), "{e}");
                use std::os::unix::fs::FileTypeExt;
                assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
                std::fs::remove_file(&fifo).unwrap();
            }
        }
        // no temporary file left behind: sub (+ link.bin, dangling.bin on unix)
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, if cfg!(unix) { 3 } else { 1 });
    }
}
