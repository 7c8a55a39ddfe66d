pub mod bench;
pub mod compare;
pub mod compress;
pub mod demo;
pub mod inspect;
pub mod prune;
pub mod report;
pub mod train;

/// Refuses an input path that is not a regular file, naming the argument `arg` (`INPUT`,
/// `--matrix`, ...): a folder is said as such, and a FIFO or a device is refused before anything
/// reads it (reading a FIFO waits for a writer; `/dev/zero` never ends). A missing file is left
/// to the read, whose error names the path.
pub fn check_input(arg: &str, path: &std::path::Path) -> Result<(), crate::CliError> {
    let what = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => "is a folder, not a file",
        Ok(m) if !m.is_file() => "is not a regular file (a FIFO or a device)",
        _ => return Ok(()),
    };
    Err(crate::CliError::Usage(format!(
        "{arg} {}: {what}",
        path.display()
    )))
}
