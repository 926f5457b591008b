//! TensorBoard event files (`events.out.tfevents.*`), scalars only, as PyTorch's
//! `SummaryWriter` writes them: TFRecord framing (length, masked CRC-32C of the length, the
//! record, masked CRC-32C of the record) around `tensorflow.Event` protocol buffers. The
//! messages are encoded by hand: four fields of three messages do not need a protobuf
//! compiler (the crates that wrap one need `protoc` at build time).
//!
//! A resumed run starts a new file with a `SessionLog.START` event at the resumed step, which
//! tells TensorBoard to drop the points a crashed run wrote after its checkpoint.
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends events to one file, flushing after each batch of scalars.
pub struct EventWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl EventWriter {
    /// A new event file in `dir` (created if needed); `from_step` > 0 marks a resumed run.
    pub fn create(dir: &Path, from_step: usize) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
        // as PyTorch's: time, host, process and a counter of the files this process opened
        static OPENED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("events.out.tfevents.{}.{}.{}.{n}", wall_time() as u64, host.trim(), std::process::id());
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).with_context(|| format!("{}: cannot create", path.display()))?;
        let mut w = EventWriter { path, file };
        w.write(&event(0, Payload::FileVersion("brain.Event:2")))?;
        if from_step > 0 {
            w.write(&event(from_step as i64, Payload::SessionStart))?;
        }
        Ok(w)
    }

    /// One event holding `values` (tag, value) at `step`.
    pub fn scalars(&mut self, step: usize, values: &[(String, f64)]) -> Result<()> {
        self.write(&event(step as i64, Payload::Scalars(values)))
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(data.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc(&len).to_le_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.file.write_all(&rec).and_then(|_| self.file.flush()).with_context(|| format!("{}: cannot write", self.path.display()))
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// TFRecord's checksum: CRC-32C, rotated right by 15 bits, plus a constant.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

enum Payload<'a> {
    FileVersion(&'a str),
    SessionStart,
    Scalars(&'a [(String, f64)]),
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2).
fn bytes_field(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint(((field << 3) | 2) as u64, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// `Event { wall_time = 1 (double), step = 2 (int64), file_version = 3 | summary = 5 |
/// session_log = 6 }`; `Summary { repeated Value value = 1 }`; `Value { tag = 1, simple_value
/// = 2 (float) }`; `SessionLog { status = 1 (START = 1) }`.
fn event(step: i64, payload: Payload) -> Vec<u8> {
    let mut e = vec![0x09];
    e.extend_from_slice(&wall_time().to_le_bytes());
    e.push(0x10);
    varint(step as u64, &mut e);
    match payload {
        Payload::FileVersion(v) => bytes_field(3, v.as_bytes(), &mut e),
        Payload::SessionStart => bytes_field(6, &[0x08, 0x01], &mut e),
        Payload::Scalars(values) => {
            let mut summary = vec![];
            for (tag, v) in values {
                let mut value = vec![];
                bytes_field(1, tag.as_bytes(), &mut value);
                value.push(0x15);
                value.extend_from_slice(&(*v as f32).to_le_bytes());
                bytes_field(1, &value, &mut summary);
            }
            bytes_field(5, &summary, &mut e);
        }
    }
    e
}

#[cfg(test)]
mod tests;
