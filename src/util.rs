//! Small helpers shared across the crate.
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Fails when `out` exists and is not an empty folder: `what` (a command) writes a new folder.
pub fn ensure_new_folder(out: &Path, what: &str) -> Result<()> {
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        anyhow::bail!("--out {}: exists and is not empty ({what} writes a new folder)", out.display());
    }
    Ok(())
}

/// Writes a file so that readers see either the old or the new content, never a torn one:
/// temp file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| Ok(std::fs::File::create(tmp)?.write_all(bytes)?))
}

/// [`write_atomic`] for a writer that takes a path: `write` fills a temporary file beside `path`
/// (`.NAME.PID.tmp`), which is synced and renamed onto `path`. On failure the temporary file is
/// removed and the error names `path`.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!("{}: cannot write: {} is a file, not a folder", path.display(), dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
    let tmp = dir.join(format!(".{}.{}.tmp", path.file_name().unwrap_or_default().to_string_lossy(), std::process::id()));
    let done = write(&tmp).and_then(|_| Ok(std::fs::File::open(&tmp)?.sync_all()?)).and_then(|_| Ok(std::fs::rename(&tmp, path)?));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done.with_context(|| format!("{}: cannot write", path.display()))
}

/// The rank of this process when `svib launch` started it as a rank other than 0.
pub fn other_launched_rank() -> Option<String> {
    std::env::var("SVIB_LAUNCH").ok()?;
    std::env::var("RANK").ok().filter(|r| r != "0")
}

/// How this process starts its error line: `error: `, or under `svib launch` on a rank other
/// than 0 `rank N: ` (rank 0 alone speaks as `error:`, so a failed job reads as one error).
pub fn error_prefix() -> String {
    other_launched_rank().map_or_else(|| "error: ".to_string(), |r| format!("rank {r}: "))
}

/// This machine's cores as the process may use them (1 where unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Opens a regular file for reading, checking its kind first (opening a named pipe would wait
/// for a writer; a device never ends); returns it with its size.
pub fn open_regular(path: &Path) -> Result<(std::fs::File, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{}: cannot read ({e})", path.display()))?;
    anyhow::ensure!(meta.is_file(), "{}: not a regular file", path.display());
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: cannot read ({e})", path.display()))?;
    Ok((file, meta.len()))
}

/// An error whose `error:` line a child process has already printed: the caller adds its
/// context as a plain line (see `cli::main`), so the user reads one error line.
#[derive(Debug)]
pub struct AlreadyReported(pub String);

impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AlreadyReported {}

/// Physical memory of this machine in bytes (None where it cannot be read).
pub fn physical_memory() -> Option<f64> {
    // SAFETY: sysconf only reads system constants.
    let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    (pages > 0 && size > 0).then_some(pages as f64 * size as f64)
}

/// Peak resident memory of this process in MiB (VmHWM), where /proc exists.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_name_the_file_and_leave_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.bin");
        write_atomic(&p, b"old").unwrap();
        // a writer that fails half-way: the old content stays, the temp file goes
        let e = write_atomic_with(&p, |tmp| {
            std::fs::write(tmp, b"ne")?;
            anyhow::bail!("disk full")
        })
        .unwrap_err();
        assert_eq!(format!("{e:#}"), format!("{}: cannot write: disk full", p.display()));
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        // below a file: named, nothing created
        let e = write_atomic(&p.join("x"), b"y").unwrap_err();
        assert_eq!(format!("{e:#}"), format!("{}: cannot write: {} is a file, not a folder", p.join("x").display(), p.display()));
    }
}
