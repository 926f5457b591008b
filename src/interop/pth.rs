//! PyTorch `.pth` / `.pt` files (torch.save's zip format): read tensors out of state dicts and
//! checkpoints (nested dicts such as DINO's {student, teacher, ...} are flattened to dotted
//! names), and write a state dict that `torch.load(..., weights_only=True)` reads.
//!
//! The reader is a small pickle machine that knows the opcodes torch.save emits and rebuilds
//! tensors from `torch._utils._rebuild_tensor_v2` calls and persistent storage ids; any other
//! object (argparse.Namespace, optimiser state) is kept opaque and skipped.
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use tch::{Kind, Tensor};

#[derive(Clone, Debug)]
enum V {
    None,
    Int(i64),
    Str(String),
    List(Vec<V>),
    Tuple(Vec<V>),
    Dict(Vec<(V, V)>),
    Global(String, String),
    Storage {
        key: String,
        kind: Kind,
    },
    Tensor {
        key: String,
        kind: Kind,
        offset: i64,
        size: Vec<i64>,
        stride: Vec<i64>,
    },
    /// Values and objects that hold no tensor (floats, bools, bytes, arbitrary classes).
    Opaque,
    Mark,
}

fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

fn ints(v: &V) -> Result<Vec<i64>> {
    match v {
        V::Tuple(x) | V::List(x) => x.iter().map(|e| if let V::Int(i) = e { Ok(*i) } else { bail!("expected an integer tuple") }).collect(),
        _ => bail!("expected an integer tuple"),
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<V>,
    memo: HashMap<u32, V>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(self.pos + n <= self.data.len(), "pickle ends early at byte {}", self.pos);
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<String> {
        let start = self.pos;
        while self.u8()? != b'\n' {}
        Ok(String::from_utf8_lossy(&self.data[start..self.pos - 1]).into_owned())
    }
    fn pop(&mut self) -> Result<V> {
        self.stack.pop().ok_or_else(|| anyhow!("pickle stack underflow at byte {}", self.pos))
    }
    fn pop_mark(&mut self) -> Result<Vec<V>> {
        let at = self.stack.iter().rposition(|v| matches!(v, V::Mark)).ok_or_else(|| anyhow!("pickle MARK missing at byte {}", self.pos))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }
    fn text(&mut self, n: usize) -> Result<V> {
        Ok(V::Str(String::from_utf8_lossy(self.take(n)?).into_owned()))
    }

    fn reduce(f: V, args: V) -> V {
        let args = if let V::Tuple(a) = args { a } else { vec![] };
        match f {
            V::Global(m, n) if m == "collections" && n == "OrderedDict" => V::Dict(vec![]),
            V::Global(m, n) if m == "torch._utils" && n == "_rebuild_tensor_v2" && args.len() >= 4 => {
                let (V::Storage { key, kind }, V::Int(offset)) = (&args[0], &args[1]) else { return V::Opaque };
                match (ints(&args[2]), ints(&args[3])) {
                    (Ok(size), Ok(stride)) => V::Tensor { key: key.clone(), kind: *kind, offset: *offset, size, stride },
                    _ => V::Opaque,
                }
            }
            // nn.Parameter(data, requires_grad, hooks): the data
            V::Global(m, n) if m == "torch._utils" && n == "_rebuild_parameter" && !args.is_empty() => args[0].clone(),
            _ => V::Opaque,
        }
    }

    fn run(mut self) -> Result<V> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'}' => self.stack.push(V::Dict(vec![])),
                b']' => self.stack.push(V::List(vec![])),
                b')' => self.stack.push(V::Tuple(vec![])),
                b'(' => self.stack.push(V::Mark),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(V::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    ensure!(self.stack.len() >= n, "pickle stack underflow at byte {}", self.pos);
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(V::Tuple(items));
                }
                b's' | b'u' => {
                    let items = if op == b's' {
                        let v = self.pop()?;
                        let k = self.pop()?;
                        vec![k, v]
                    } else {
                        self.pop_mark()?
                    };
                    if let Some(V::Dict(d)) = self.stack.last_mut() {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                }
                b'a' | b'e' => {
                    let items = if op == b'a' { vec![self.pop()?] } else { self.pop_mark()? };
                    if let Some(V::List(l)) = self.stack.last_mut() {
                        l.extend(items);
                    }
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.text(n)?;
                    self.stack.push(s);
                }
                0x8c | b'U' => {
                    let n = self.u8()? as usize;
                    let s = self.text(n)?;
                    self.stack.push(s);
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.take(8)?.try_into().unwrap()) as usize;
                    let s = self.text(n)?;
                    self.stack.push(s);
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let s = self.text(n)?;
                    self.stack.push(s);
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    self.take(n)?;
                    self.stack.push(V::Opaque);
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    self.take(n)?;
                    self.stack.push(V::Opaque);
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap()) as i64;
                    self.stack.push(V::Int(v));
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    self.stack.push(V::Int(v));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into().unwrap()) as i64;
                    self.stack.push(V::Int(v));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    ensure!(n <= 8, "pickle integer of {n} bytes is too large");
                    let mut buf = if b.last().is_some_and(|x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(V::Int(i64::from_le_bytes(buf)));
                }
                b'G' => {
                    self.take(8)?;
                    self.stack.push(V::Opaque);
                }
                b'N' => self.stack.push(V::None),
                0x88 | 0x89 => self.stack.push(V::Opaque),
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(V::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (V::Str(m), V::Str(n)) = (module, name) else { bail!("STACK_GLOBAL needs two strings") };
                    self.stack.push(V::Global(m, n));
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    self.stack.push(Self::reduce(f, args));
                }
                b'b' => {
                    self.pop()?; // state of an object: not needed
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    let top = self.stack.last().cloned().unwrap_or(V::None);
                    self.memo.insert(i, top);
                }
                b'r' => {
                    let i = self.u32()?;
                    let top = self.stack.last().cloned().unwrap_or(V::None);
                    self.memo.insert(i, top);
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    let top = self.stack.last().cloned().unwrap_or(V::None);
                    self.memo.insert(i, top);
                }
                b'h' | b'j' => {
                    let i = if op == b'h' { self.u8()? as u32 } else { self.u32()? };
                    let v = self.memo.get(&i).cloned().ok_or_else(|| anyhow!("pickle memo {i} missing"))?;
                    self.stack.push(v);
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = match pid {
                        V::Tuple(t) if t.len() >= 3 => match (&t[1], &t[2]) {
                            (V::Global(_, ty), V::Str(key)) => match storage_kind(ty) {
                                Some(kind) => V::Storage { key: key.clone(), kind },
                                None => bail!("unsupported storage type `{ty}`"),
                            },
                            _ => V::Opaque,
                        },
                        _ => V::Opaque,
                    };
                    self.stack.push(v);
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.stack.last().cloned().ok_or_else(|| anyhow!("pickle stack underflow"))?;
                    self.stack.push(top);
                }
                other => bail!("unsupported pickle opcode 0x{other:02x} at byte {}", self.pos - 1),
            }
        }
    }
}

fn flatten(prefix: &str, v: &V, out: &mut Vec<(String, V)>) {
    match v {
        V::Dict(items) => {
            for (k, v) in items {
                let key = match k {
                    V::Str(s) => s.clone(),
                    V::Int(i) => i.to_string(),
                    _ => continue,
                };
                flatten(&if prefix.is_empty() { key } else { format!("{prefix}.{key}") }, v, out);
            }
        }
        V::Tensor { .. } => out.push((prefix.to_string(), v.clone())),
        _ => {}
    }
}

/// All tensors of a torch.save file, with dotted names for nested dicts.
pub fn read_pth(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|_| anyhow!("{}: not a torch.save zip archive (files from torch < 1.6 must be re-saved with a newer torch)", path.display()))?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let pkl = names.iter().find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1).ok_or_else(|| anyhow!("{}: no data.pkl in the archive", path.display()))?.clone();
    let root = pkl.trim_end_matches("data.pkl").to_string();
    let mut read = |name: &str| -> Result<Vec<u8>> {
        let mut e = zip.by_name(name).map_err(|_| anyhow!("{}: archive entry `{name}` missing", path.display()))?;
        let mut b = vec![];
        e.read_to_end(&mut b).with_context(|| format!("{}: cannot read `{name}`", path.display()))?;
        Ok(b)
    };
    let pickle = read(&pkl)?;
    let top = Machine { data: &pickle, pos: 0, stack: vec![], memo: HashMap::new() }.run().with_context(|| format!("{}: {pkl}", path.display()))?;
    let mut found = vec![];
    flatten("", &top, &mut found);
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = vec![];
    for (name, v) in found {
        let V::Tensor { key, kind, offset, size, stride } = v else { continue };
        if !storages.contains_key(&key) {
            let bytes = read(&format!("{root}data/{key}"))?;
            storages.insert(key.clone(), bytes);
        }
        let bytes = &storages[&key];
        let elem = kind.elt_size_in_bytes();
        let numel = (bytes.len() / elem) as i64;
        let storage = Tensor::from_data_size(bytes, &[numel], kind);
        let last = offset + size.iter().zip(&stride).map(|(s, st)| (s - 1).max(0) * st).sum::<i64>();
        ensure!(size.iter().any(|&s| s == 0) || last < numel, "{}: tensor `{name}` reaches past its storage", path.display());
        out.push((name, storage.as_strided(&size, &stride, Some(offset)).contiguous()));
    }
    Ok(out)
}

fn storage_name(kind: Kind) -> Result<&'static str> {
    Ok(match kind {
        Kind::Float => "FloatStorage",
        Kind::Double => "DoubleStorage",
        Kind::Half => "HalfStorage",
        Kind::BFloat16 => "BFloat16Storage",
        Kind::Int64 => "LongStorage",
        Kind::Int => "IntStorage",
        Kind::Uint8 => "ByteStorage",
        Kind::Bool => "BoolStorage",
        other => bail!("cannot write tensors of kind {other:?}"),
    })
}

/// Writes a state dict (an OrderedDict of contiguous CPU tensors) as torch.save does, atomically.
pub fn write_pth(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    let mut p: Vec<u8> = vec![0x80, 2];
    let global = |p: &mut Vec<u8>, m: &str, n: &str| {
        p.push(b'c');
        p.extend_from_slice(format!("{m}\n{n}\n").as_bytes());
    };
    let string = |p: &mut Vec<u8>, s: &str| {
        p.push(b'X');
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    };
    let int = |p: &mut Vec<u8>, v: i64| {
        if let Ok(v) = i32::try_from(v) {
            p.push(b'J');
            p.extend_from_slice(&v.to_le_bytes());
        } else {
            p.extend_from_slice(&[0x8a, 8]);
            p.extend_from_slice(&v.to_le_bytes());
        }
    };
    let ordered_dict = |p: &mut Vec<u8>| {
        global(p, "collections", "OrderedDict");
        p.extend_from_slice(b")R");
    };
    ordered_dict(&mut p);
    p.push(b'(');
    let mut blobs = vec![];
    for (i, (name, t)) in named.iter().enumerate() {
        let t = t.to_device(tch::Device::Cpu).contiguous();
        let key = i.to_string();
        let numel = t.numel() as i64;
        string(&mut p, name);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.push(b'(');
        p.push(b'(');
        string(&mut p, "storage");
        global(&mut p, "torch", storage_name(t.kind())?);
        string(&mut p, &key);
        string(&mut p, "cpu");
        int(&mut p, numel);
        p.extend_from_slice(b"tQ");
        int(&mut p, 0);
        for dims in [t.size(), t.stride()] {
            p.push(b'(');
            for d in dims {
                int(&mut p, d);
            }
            p.push(b't');
        }
        p.push(0x89);
        ordered_dict(&mut p);
        p.extend_from_slice(b"tR");
        let mut bytes = vec![0u8; numel as usize * t.kind().elt_size_in_bytes()];
        t.copy_data_u8(&mut bytes, numel as usize);
        blobs.push((key, bytes));
    }
    p.extend_from_slice(b"u.");
    let tmp = path.with_extension("pth.tmp");
    let file = std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let entry = |zip: &mut zip::ZipWriter<std::fs::File>, name: &str, data: &[u8]| -> Result<()> {
        zip.start_file(format!("archive/{name}"), opts).map_err(|e| anyhow!("{}: {e}", tmp.display()))?;
        zip.write_all(data).with_context(|| format!("{}: cannot write", tmp.display()))
    };
    entry(&mut zip, "data.pkl", &p)?;
    entry(&mut zip, "byteorder", b"little")?;
    for (key, bytes) in &blobs {
        entry(&mut zip, &format!("data/{key}"), bytes)?;
    }
    entry(&mut zip, "version", b"3\n")?;
    zip.finish().map_err(|e| anyhow!("{}: {e}", tmp.display()))?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))
}

#[cfg(test)]
mod tests;
