//! One writer per run directory, and a clean start after a crash: a lock on `DIR/.lock` held for
//! the whole run, and removal of what an interrupted writer left behind (temp files, a
//! checkpoint half without its other half).
use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Held while a run writes its directory; released when dropped (or when the process dies).
pub struct RunLock {
    _file: std::fs::File,
}

/// Takes the run directory's lock, or fails with one line naming the process that holds it.
pub fn lock(dir: &Path) -> Result<RunLock> {
    let path = dir.join(".lock");
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).with_context(|| format!("{}: cannot open", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            bail!("{}: cannot lock ({err}); svib needs a file system with flock for a run directory", path.display());
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        let who = if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") };
        bail!("{}: {who} is writing this run directory (lock {}); wait for it to finish, or choose another --out", dir.display(), path.display());
    }
    file.set_len(0).and_then(|_| file.rewind()).and_then(|_| write!(file, "{}", std::process::id())).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(RunLock { _file: file })
}

/// Removes what a writer killed mid-write left: `.NAME.PID.tmp` files and checkpoint halves (a
/// `.safetensors` without its `.json`, or the reverse). Call with the lock held.
pub fn clean_stale(dir: &Path) -> Result<Vec<String>> {
    let mut removed = vec![];
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        let half = name.starts_with("ckpt-")
            && match p.extension().and_then(|x| x.to_str()) {
                Some("safetensors") => !p.with_extension("json").is_file(),
                Some("json") => !p.with_extension("safetensors").is_file(),
                _ => false,
            };
        let ours = [".config.toml.", ".metrics.jsonl.", ".result.json.", ".diverged.txt.", ".ckpt-"];
        let tmp = ours.iter().any(|p| name.starts_with(p)) && name.ends_with(".tmp");
        if (tmp || half) && std::fs::remove_file(&p).is_ok() {
            removed.push(name);
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holders_pid() {
        let d = tempfile::tempdir().unwrap();
        let held = lock(d.path()).unwrap();
        let e = lock(d.path()).err().unwrap().to_string();
        assert!(e.contains(&format!("process {}", std::process::id())) && e.contains("another --out"), "{e}");
        drop(held);
        lock(d.path()).unwrap();
    }

    #[test]
    fn stale_temp_files_and_checkpoint_halves_are_removed() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            ".config.toml.123.tmp",
            ".ckpt-00000005.safetensors.tmp",
            "ckpt-00000006.safetensors",
            "ckpt-00000007.json",
            "ckpt-00000004.safetensors",
            "ckpt-00000004.json",
            "metrics.jsonl",
        ] {
            std::fs::write(d.path().join(f), b"x").unwrap();
        }
        let removed = clean_stale(d.path()).unwrap();
        assert_eq!(removed, vec![".ckpt-00000005.safetensors.tmp", ".config.toml.123.tmp", "ckpt-00000006.safetensors", "ckpt-00000007.json"]);
        let mut left: Vec<String> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, vec!["ckpt-00000004.json", "ckpt-00000004.safetensors", "metrics.jsonl"]);
    }
}
