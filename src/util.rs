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

/// A float as a person writes it: plain between 1e-4 and 1e7, e-notation outside (`1e-300`, not
/// 300 digits).
pub struct Num<T>(pub T);

impl<T: Copy + Into<f64> + std::fmt::Display + std::fmt::LowerExp> std::fmt::Display for Num<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (v, a) = (self.0.into(), self.0.into().abs());
        if a == 0.0 || !a.is_finite() || (1e-4..1e7).contains(&a) {
            write!(f, "{}", self.0)
        } else if a < 1e15 && v.fract() == 0.0 && !format!("{v:.0}").ends_with("000") {
            // a whole number with no run of zeros (a typed count such as 99999999) in digits
            write!(f, "{v:.0}")
        } else {
            write!(f, "{:e}", self.0)
        }
    }
}

/// `s` cut to at most `max` characters, its middle replaced by a count of what was left out.
pub fn shorten(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(40) / 2;
    let head: String = s.chars().take(keep).collect();
    let tail: String = s.chars().skip(n - keep).collect();
    format!("{head}…({} characters left out)…{tail}", n - 2 * keep)
}

/// A serde/toml/serde_json type error in words: Rust type names (`expected u64`, `expected struct
/// GmmConfig`) become what to write, a number too large to read is called that, quoted values are
/// shortened and the trailing `` in `key` `` goes (the caller names the key). One line.
pub fn plain_serde(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or_default().trim();
    // serde_json ends with where it stopped: kept, after the words
    let (first, at) = first.rfind(" at line ").map_or((first, ""), |i| first.split_at(i));
    let mut m = first.to_string();
    if let Some(i) = m.rfind(" in `").filter(|_| m.ends_with('`')) {
        m.truncate(i);
    }
    let whole = ["usize", "u64", "u32", "u16", "u8"].map(|t| (t, "a whole number (0 or more)"));
    let int = ["isize", "i64", "i32", "i16", "i8"].map(|t| (t, "a whole number"));
    let float = ["f64", "f32"].map(|t| (t, "a number"));
    // TOML reads integers as i64; a longer run of digits reaches here as a string
    let quoted = m.split("string \"").nth(1).and_then(|r| r.split('"').next());
    let too_large = quoted.filter(|d| d.trim_start_matches('-').len() >= 19 && d.trim_start_matches('-').chars().all(|c| c.is_ascii_digit())).map(str::to_string);
    for (t, words) in whole.iter().chain(&int).chain(&float) {
        let pat = format!("expected {t}");
        if m.ends_with(&pat) {
            m = match &too_large {
                Some(d) => format!("`{}` is too large (TOML integers go up to 9223372036854775807)", shorten(d, 40)),
                None => format!("{}expected {words}", &m[..m.len() - pat.len()]),
            };
            break;
        }
    }
    if let Some(i) = m.find("expected struct ") {
        m = format!("{}expected a table of keys", &m[..i]);
    }
    let m = m.replace("expected a tuple of size 2", "expected an array of 2 values");
    // every quoted value (between ` or ") at most 60 characters
    format!("{}{at}", shorten_quoted(&shorten_quoted(&m, '`'), '"'))
}

/// Every stretch of `s` between a pair of `quote`s cut to at most 60 characters.
fn shorten_quoted(s: &str, quote: char) -> String {
    s.split(quote).enumerate().map(|(i, p)| if i % 2 == 1 { shorten(p, 60) } else { p.to_string() }).collect::<Vec<_>>().join(&quote.to_string())
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

    #[test]
    fn numbers_and_long_values_read_as_written() {
        assert_eq!(Num(1e-300).to_string(), "1e-300");
        assert_eq!(Num(1e-12).to_string(), "1e-12");
        assert_eq!(Num(0.0005).to_string(), "0.0005");
        assert_eq!(Num(100.0).to_string(), "100");
        assert_eq!(Num(-2.5e9).to_string(), "-2.5e9");
        assert_eq!(Num(99999999.0).to_string(), "99999999");
        assert_eq!(Num(1e10).to_string(), "1e10");
        assert_eq!(Num(0.0).to_string(), "0");
        assert_eq!(Num(1e30f32).to_string(), "1e30");
        assert_eq!(shorten("abc", 3), "abc");
        let s = shorten(&"x".repeat(1000), 100);
        assert_eq!(s, format!("{}…(940 characters left out)…{}", "x".repeat(30), "x".repeat(30)));
    }

    #[test]
    fn serde_messages_in_words() {
        let cases = [
            ("invalid type: integer `3`, expected struct GmmConfig", "invalid type: integer `3`, expected a table of keys"),
            ("invalid value: integer `-1`, expected usize in `train.steps`", "invalid value: integer `-1`, expected a whole number (0 or more)"),
            ("invalid type: sequence, expected i64", "invalid type: sequence, expected a whole number"),
            ("invalid type: string \"abc\", expected f32", "invalid type: string \"abc\", expected a number"),
            ("invalid type: string \"99999999999999999999\", expected u64 in `train.seed`", "`99999999999999999999` is too large (TOML integers go up to 9223372036854775807)"),
            ("invalid type: integer `1`, expected a tuple of size 2", "invalid type: integer `1`, expected an array of 2 values"),
            ("unknown variant `x`, expected one of `adamw`, `lars`", "unknown variant `x`, expected one of `adamw`, `lars`"),
            ("invalid type: string \"a\", expected u32 at line 1 column 9", "invalid type: string \"a\", expected a whole number (0 or more) at line 1 column 9"),
        ];
        for (raw, words) in cases {
            assert_eq!(plain_serde(raw), words, "{raw}");
        }
        let long = plain_serde(&format!("unknown variant `{}`, expected one of `a`", "v".repeat(500)));
        assert!(long.len() < 150 && long.contains("characters left out") && long.ends_with("expected one of `a`"), "{long}");
    }
}
