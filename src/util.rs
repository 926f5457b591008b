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
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
    let tmp = dir.join(format!(".{}.{}.tmp", path.file_name().unwrap_or_default().to_string_lossy(), std::process::id()));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    f.write_all(bytes).with_context(|| format!("{}: cannot write", tmp.display()))?;
    f.sync_all().with_context(|| format!("{}: cannot sync", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot rename into place", path.display()))?;
    Ok(())
}

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
