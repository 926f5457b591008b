//! PyTorch `.pth` / `.pt` files (torch.save's zip format): read tensors out of state dicts and
//! checkpoints (nested dicts such as DINO's {student, teacher, ...} are flattened to dotted
//! names), and write a state dict that `torch.load(..., weights_only=True)` reads.
//!
//! The reader is a small pickle machine that knows the opcodes torch.save emits and rebuilds
//! tensors from `torch._utils._rebuild_tensor_v2` calls and persistent storage ids; any other
//! object (argparse.Namespace, optimiser state) is kept opaque and skipped.
//!
//! Every file is treated as hostile: arithmetic on lengths, offsets, sizes and strides is
//! checked; nesting depth, values copied through the pickle memo and the pickle's own size are
//! bounded; a tensor's view is validated against its storage before any storage is read; and
//! [`read_pth_where`] materialises only the tensors a caller wants (a model's names and shapes),
//! reading no more of a storage than those tensors reach.
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
    List(Vec<V>, Meta),
    Tuple(Vec<V>, Meta),
    Dict(Vec<(V, V)>, Meta),
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

/// Nesting below a value and the values it holds: kept on every container so that copies
/// through the memo can be charged without walking them.
#[derive(Clone, Copy, Debug)]
struct Meta {
    depth: u16,
    nodes: usize,
}

impl Meta {
    /// An empty container: one value, nothing below it.
    const EMPTY: Meta = Meta { depth: 0, nodes: 1 };
}

/// Containers nested deeper than this are refused (a hostile pickle nests millions).
const MAX_DEPTH: u16 = 256;
/// Values a pickle may build or copy through its memo (a state dict of a ViT-L with optimiser
/// state holds tens of thousands; a memo-doubling pickle would hold billions).
const MAX_NODES: usize = 2_000_000;
/// data.pkl larger than this is refused (real ones are kilobytes to a few megabytes).
const MAX_PICKLE_BYTES: u64 = 256 << 20;

impl V {
    fn meta(&self) -> Meta {
        match self {
            V::List(_, m) | V::Tuple(_, m) | V::Dict(_, m) => *m,
            V::Str(s) => Meta { depth: 0, nodes: 1 + s.len() / 32 },
            V::Global(a, b) => Meta { depth: 0, nodes: 1 + (a.len() + b.len()) / 32 },
            V::Tensor { size, .. } => Meta { depth: 0, nodes: 1 + size.len() / 4 },
            _ => Meta { depth: 0, nodes: 1 },
        }
    }
    fn tuple(items: Vec<V>) -> Result<V> {
        let mut m = Meta::EMPTY;
        for i in &items {
            grow(&mut m, i.meta())?;
        }
        Ok(V::Tuple(items, m))
    }
}

/// Accounts for `item` placed inside a container with meta `m`.
fn grow(m: &mut Meta, item: Meta) -> Result<()> {
    m.depth = m.depth.max(item.depth.saturating_add(1));
    m.nodes = m.nodes.saturating_add(item.nodes);
    ensure!(m.depth <= MAX_DEPTH, "pickle nests containers deeper than {MAX_DEPTH} levels");
    Ok(())
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
        V::Tuple(x, _) | V::List(x, _) => x.iter().map(|e| if let V::Int(i) = e { Ok(*i) } else { bail!("expected an integer tuple") }).collect(),
        _ => bail!("expected an integer tuple"),
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<V>,
    memo: HashMap<u32, V>,
    /// Values built or copied so far (bounded by MAX_NODES).
    nodes: usize,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(n <= self.data.len() - self.pos, "pickle ends early at byte {}", self.pos);
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
    /// Charges `n` more values against MAX_NODES.
    fn charge(&mut self, n: usize) -> Result<()> {
        self.nodes = self.nodes.saturating_add(n);
        ensure!(self.nodes <= MAX_NODES, "pickle builds more than {MAX_NODES} values (byte {}): not a state dict", self.pos);
        Ok(())
    }
    fn push(&mut self, v: V) -> Result<()> {
        self.charge(1)?;
        self.stack.push(v);
        Ok(())
    }
    /// A copy of the top of the stack (for the memo or DUP), charged by its size.
    fn top_copy(&mut self) -> Result<V> {
        let n = self.stack.last().ok_or_else(|| anyhow!("pickle stack underflow at byte {}", self.pos))?.meta().nodes;
        self.charge(n)?;
        self.stack.last().cloned().ok_or_else(|| anyhow!("pickle stack underflow at byte {}", self.pos))
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
        let args = if let V::Tuple(a, _) = args { a } else { vec![] };
        match f {
            V::Global(m, n) if m == "collections" && n == "OrderedDict" => V::Dict(vec![], Meta::EMPTY),
            V::Global(m, n) if m == "torch._utils" && n == "_rebuild_tensor_v2" && args.len() >= 4 => {
                let (V::Storage { key, kind }, V::Int(offset)) = (&args[0], &args[1]) else { return V::Opaque };
                match (ints(&args[2]), ints(&args[3])) {
                    (Ok(size), Ok(stride)) => V::Tensor { key: key.clone(), kind: *kind, offset: *offset, size, stride },
                    _ => V::Opaque,
                }
            }
            // nn.Parameter(data, requires_grad, hooks): the data
            V::Global(m, n) if m == "torch._utils" && n == "_rebuild_parameter" => args.into_iter().next().unwrap_or(V::Opaque),
            _ => V::Opaque,
        }
    }

    /// SETITEM(S) / APPEND(S): `items` go into the dict or list on top of the stack.
    fn extend_top(&mut self, items: Vec<V>) -> Result<()> {
        match self.stack.last_mut() {
            Some(V::Dict(d, m)) => {
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    grow(m, k.meta())?;
                    grow(m, v.meta())?;
                    d.push((k, v));
                }
            }
            Some(V::List(l, m)) => {
                for v in items {
                    grow(m, v.meta())?;
                    l.push(v);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn int_le(&mut self, n: usize) -> Result<i64> {
        ensure!(n <= 8, "pickle integer of {n} bytes is too large");
        let b = self.take(n)?;
        let mut buf = if b.last().is_some_and(|x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
        buf[..n].copy_from_slice(b);
        Ok(i64::from_le_bytes(buf))
    }

    fn len_u32(&mut self) -> Result<usize> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?) as usize)
    }

    /// Opcodes that push a string, a number or an opaque scalar; false for any other opcode.
    fn scalar(&mut self, op: u8) -> Result<bool> {
        let v = match op {
            b'X' | b'T' => {
                let n = self.len_u32()?;
                self.text(n)?
            }
            0x8c | b'U' => {
                let n = self.u8()? as usize;
                self.text(n)?
            }
            0x8d => {
                let n = usize::try_from(u64::from_le_bytes(self.take(8)?.try_into()?)).unwrap_or(usize::MAX);
                self.text(n)?
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => self.len_u32()?,
                    b'C' => self.u8()? as usize,
                    _ => usize::try_from(u64::from_le_bytes(self.take(8)?.try_into()?)).unwrap_or(usize::MAX),
                };
                self.take(n)?;
                V::Opaque
            }
            b'J' => V::Int(self.int_le(4)?),
            b'K' => V::Int(self.u8()? as i64),
            b'M' => V::Int(u16::from_le_bytes(self.take(2)?.try_into()?) as i64),
            0x8a => {
                let n = self.u8()? as usize;
                V::Int(self.int_le(n)?)
            }
            b'G' => {
                self.take(8)?;
                V::Opaque
            }
            b'N' => V::None,
            0x88 | 0x89 => V::Opaque,
            _ => return Ok(false),
        };
        self.push(v)?;
        Ok(true)
    }

    /// Opcodes of the memo (PUT, GET and their short forms).
    fn memo_op(&mut self, op: u8) -> Result<bool> {
        match op {
            b'q' | b'r' | 0x94 => {
                let i = match op {
                    b'q' => self.u8()? as u32,
                    b'r' => self.u32()?,
                    _ => self.memo.len() as u32,
                };
                let top = self.top_copy()?;
                self.memo.insert(i, top);
            }
            b'h' | b'j' => {
                let i = if op == b'h' { self.u8()? as u32 } else { self.u32()? };
                let n = self.memo.get(&i).ok_or_else(|| anyhow!("pickle memo {i} missing"))?.meta().nodes;
                self.charge(n)?;
                let v = self.memo[&i].clone();
                self.stack.push(v);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// BINPERSID: a storage of torch.save's zip format.
    fn persistent_id(&mut self) -> Result<()> {
        let pid = self.pop()?;
        let v = match pid {
            V::Tuple(t, _) if t.len() >= 3 => match (&t[1], &t[2]) {
                (V::Global(_, ty), V::Str(key)) => match storage_kind(ty) {
                    Some(kind) => V::Storage { key: key.clone(), kind },
                    None => bail!("unsupported storage type `{ty}`"),
                },
                _ => V::Opaque,
            },
            _ => V::Opaque,
        };
        self.push(v)
    }

    /// Opcodes that build containers, call globals or drop values; false for unknown opcodes.
    fn structure(&mut self, op: u8) -> Result<bool> {
        match op {
            b'}' => self.push(V::Dict(vec![], Meta::EMPTY))?,
            b']' => self.push(V::List(vec![], Meta::EMPTY))?,
            b')' => self.push(V::Tuple(vec![], Meta::EMPTY))?,
            b'(' => self.push(V::Mark)?,
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(V::tuple(items)?);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                ensure!(self.stack.len() >= n, "pickle stack underflow at byte {}", self.pos);
                let items = self.stack.split_off(self.stack.len() - n);
                self.stack.push(V::tuple(items)?);
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.extend_top(vec![k, v])?;
            }
            b'a' => {
                let v = self.pop()?;
                self.extend_top(vec![v])?;
            }
            b'u' | b'e' => {
                let items = self.pop_mark()?;
                self.extend_top(items)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push(V::Global(module, name))?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (V::Str(m), V::Str(n)) = (module, name) else { bail!("STACK_GLOBAL needs two strings") };
                self.push(V::Global(m, n))?;
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let f = self.pop()?;
                self.push(Self::reduce(f, args))?;
            }
            b'Q' => self.persistent_id()?,
            b'b' | b'0' => drop(self.pop()?), // BUILD: an object's state is not needed
            b'1' => drop(self.pop_mark()?),
            b'2' => {
                let top = self.top_copy()?;
                self.stack.push(top);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn run(mut self) -> Result<V> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => drop(self.u8()?),
                0x95 => drop(self.take(8)?),
                b'.' => return self.pop(),
                _ if self.scalar(op)? || self.memo_op(op)? || self.structure(op)? => {}
                other => bail!("unsupported pickle opcode 0x{other:02x} at byte {}", self.pos - 1),
            }
        }
    }
}

fn flatten(prefix: &str, v: V, out: &mut Vec<(String, V)>) {
    match v {
        V::Dict(items, _) => {
            for (k, v) in items {
                let key = match k {
                    V::Str(s) => s,
                    V::Int(i) => i.to_string(),
                    _ => continue,
                };
                flatten(&if prefix.is_empty() { key } else { format!("{prefix}.{key}") }, v, out);
            }
        }
        V::Tensor { .. } => out.push((prefix.to_string(), v)),
        _ => {}
    }
}

/// A tensor's view of its storage, validated: the number of elements it holds and the storage
/// elements it reaches (offset + the farthest element + 1), both without overflow.
fn view_extent(name: &str, offset: i64, size: &[i64], stride: &[i64]) -> Result<(i64, i64)> {
    ensure!(size.len() == stride.len(), "tensor `{name}`: {} sizes but {} strides", size.len(), stride.len());
    ensure!(offset >= 0 && size.iter().chain(stride).all(|&x| x >= 0), "tensor `{name}`: negative offset, size or stride");
    let numel = size.iter().try_fold(1i64, |a, &s| a.checked_mul(s)).ok_or_else(|| anyhow!("tensor `{name}`: its size {size:?} overflows"))?;
    ensure!(size.iter().zip(stride).all(|(&s, &st)| s <= 1 || st > 0), "tensor `{name}` repeats its storage (a stride of 0); re-save it with .contiguous()");
    if numel == 0 {
        return Ok((0, 0));
    }
    let last = size.iter().zip(stride).try_fold(offset, |a, (&s, &st)| (s - 1).checked_mul(st).and_then(|x| a.checked_add(x)));
    let reach = last.and_then(|l| l.checked_add(1)).ok_or_else(|| anyhow!("tensor `{name}`: its offset and strides overflow"))?;
    Ok((numel, reach))
}

/// One tensor of the pickle: which storage, which view.
struct TensorView {
    name: String,
    key: String,
    kind: Kind,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
    reach: i64,
}

/// The archive's pickle, parsed: its tensors in order, views validated.
fn tensors_of(zip: &mut zip::ZipArchive<std::fs::File>, path: &Path) -> Result<(String, Vec<TensorView>)> {
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let pkl = names.iter().find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1).ok_or_else(|| anyhow!("{}: no data.pkl in the archive", path.display()))?.clone();
    let root = pkl.trim_end_matches("data.pkl").to_string();
    let pickle = read_entry(zip, &pkl, MAX_PICKLE_BYTES, path)?;
    let top = Machine { data: &pickle, pos: 0, stack: vec![], memo: HashMap::new(), nodes: 0 }.run().with_context(|| format!("{}: {pkl}", path.display()))?;
    let mut found = vec![];
    flatten("", top, &mut found);
    let mut out = vec![];
    for (name, v) in found {
        let V::Tensor { key, kind, offset, size, stride } = v else { continue };
        let (_, reach) = view_extent(&name, offset, &size, &stride).with_context(|| path.display().to_string())?;
        out.push(TensorView { name, key, kind, offset, size, stride, reach });
    }
    Ok((root, out))
}

/// An archive entry, refused when it declares more than `limit` bytes, and read only as far
/// as `limit` (a compressed entry cannot expand beyond it).
fn read_entry(zip: &mut zip::ZipArchive<std::fs::File>, name: &str, limit: u64, path: &Path) -> Result<Vec<u8>> {
    let e = zip.by_name(name).map_err(|_| anyhow!("{}: archive entry `{name}` missing", path.display()))?;
    ensure!(e.size() <= limit || name.contains("/data/"), "{}: archive entry `{name}` declares {} bytes, more than the {limit} allowed", path.display(), e.size());
    let mut b = Vec::with_capacity(limit.min(e.size()).min(1 << 30) as usize);
    e.take(limit).read_to_end(&mut b).with_context(|| format!("{}: cannot read `{name}`", path.display()))?;
    Ok(b)
}

/// All tensors of a torch.save file, with dotted names for nested dicts.
pub fn read_pth(path: &Path) -> Result<Vec<(String, Tensor)>> {
    read_pth_where(path, |_, _| true)
}

/// The tensors of a torch.save file, with dotted names for nested dicts. Only the tensors for
/// which `keep(name, size)` holds are read; every other one comes back as a placeholder of its
/// size that holds no memory (a zero expanded to the size), so that a caller can still name it.
pub fn read_pth_where(path: &Path, keep: impl Fn(&str, &[i64]) -> bool) -> Result<Vec<(String, Tensor)>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|_| anyhow!("{}: not a torch.save zip archive (files from torch < 1.6 must be re-saved with a newer torch)", path.display()))?;
    let (root, metas) = tensors_of(&mut zip, path)?;
    // the bytes of each storage that the kept tensors reach
    let mut need: HashMap<&str, (Kind, i64)> = HashMap::new();
    for m in metas.iter().filter(|m| keep(&m.name, &m.size)) {
        let e = need.entry(&m.key).or_insert((m.kind, 0));
        ensure!(e.0 == m.kind, "{}: storage `{}` is read as two kinds", path.display(), m.key);
        e.1 = e.1.max(m.reach);
    }
    let mut storages: HashMap<&str, Tensor> = HashMap::new();
    for (key, (kind, reach)) in need {
        let bytes = (reach as u64).checked_mul(kind.elt_size_in_bytes() as u64).ok_or_else(|| anyhow!("{}: storage `{key}` overflows", path.display()))?;
        let data = read_entry(&mut zip, &format!("{root}data/{key}"), bytes, path)?;
        ensure!(data.len() as u64 == bytes, "{}: storage `{key}` holds {} bytes, its tensors reach {bytes}", path.display(), data.len());
        storages.insert(key, Tensor::from_data_size(&data, &[reach], kind));
    }
    let mut out = vec![];
    for m in &metas {
        let t = match storages.get(m.key.as_str()) {
            Some(s) if keep(&m.name, &m.size) => s.f_as_strided(&m.size, &m.stride, Some(m.offset))?.contiguous(),
            _ => Tensor::zeros([], (m.kind, tch::Device::Cpu)).f_expand(&m.size, false)?,
        };
        out.push((m.name.clone(), t));
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

/// A contiguous CPU tensor under its storage key.
type Storage = (String, Tensor);

/// Writes a state dict (an OrderedDict of contiguous CPU tensors) as torch.save does, atomically,
/// one tensor's bytes in memory at a time.
pub fn write_pth(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    let (pickle, storages) = state_dict_pickle(named)?;
    crate::util::write_atomic_with(path, |tmp| torch_save_archive(Quiet::new(std::fs::File::create(tmp)?), &pickle, &storages))
}

/// A file that keeps its first error and then carries on as if written (tracking the position),
/// so that the zip writer, dropped after a failed write (a full disk), finishes quietly instead of
/// printing its own complaint beside the one error line.
struct Quiet<W> {
    inner: W,
    failed: bool,
    pos: u64,
    len: u64,
}

impl<W> Quiet<W> {
    fn new(inner: W) -> Self {
        Quiet { inner, failed: false, pos: 0, len: 0 }
    }
    fn keep<T>(&mut self, r: std::io::Result<T>, ok: impl FnOnce(&T) -> u64) -> std::io::Result<T> {
        match r {
            Ok(v) => {
                self.pos = ok(&v);
                self.len = self.len.max(self.pos);
                Ok(v)
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}

impl<W: Write> Write for Quiet<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let pos = self.pos;
        if self.failed {
            return self.keep(Ok(b.len()), |n| pos + *n as u64);
        }
        let r = match self.inner.write(b) {
            Ok(0) if !b.is_empty() => Err(std::io::ErrorKind::WriteZero.into()),
            r => r,
        };
        self.keep(r, |n| pos + *n as u64)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.failed {
            return Ok(());
        }
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

impl<W: std::io::Seek> std::io::Seek for Quiet<W> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        use std::io::SeekFrom;
        if self.failed {
            let p = match to {
                SeekFrom::Start(n) => n,
                SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
                SeekFrom::End(d) => self.len.saturating_add_signed(d),
            };
            return self.keep(Ok(p), |p| *p);
        }
        let r = self.inner.seek(to);
        self.keep(r, |p| *p)
    }
}

/// The pickle of an OrderedDict of tensors as torch.save writes it, and each tensor (CPU,
/// contiguous) under its storage key.
fn state_dict_pickle(named: &[(String, Tensor)]) -> Result<(Vec<u8>, Vec<Storage>)> {
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
    let mut storages = vec![];
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
        storages.push((key, t));
    }
    p.extend_from_slice(b"u.");
    Ok((p, storages))
}

/// Writes torch.save's zip archive (stored, not compressed) of a pickle and its storages to `w`.
fn torch_save_archive<W: Write + std::io::Seek>(w: W, pickle: &[u8], storages: &[Storage]) -> Result<()> {
    let mut zip = zip::ZipWriter::new(w);
    let opts = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut entry = |name: &str, data: &[u8]| -> Result<()> {
        zip.start_file(format!("archive/{name}"), opts)?;
        Ok(zip.write_all(data)?)
    };
    entry("data.pkl", pickle)?;
    entry("byteorder", b"little")?;
    for (key, t) in storages {
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.copy_data_u8(&mut bytes, numel);
        entry(&format!("data/{key}"), &bytes)?;
    }
    entry("version", b"3\n")?;
    zip.finish()?;
    Ok(())
}

/// A committed test fixture (tests/fixtures/NAME, written once by a script in scripts/fixtures/),
/// looked up by tensor name.
#[cfg(test)]
pub(crate) struct Fixture(std::collections::BTreeMap<String, Tensor>);

#[cfg(test)]
impl Fixture {
    pub(crate) fn load(name: &str) -> Fixture {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        Fixture(read_pth(&path).unwrap_or_else(|e| panic!("fixture {name}: {e:#}")).into_iter().collect())
    }

    /// The tensor named `key`; panics naming a missing one.
    pub(crate) fn get(&self, key: &str) -> Tensor {
        self.0.get(key).unwrap_or_else(|| panic!("fixture: no {key}")).shallow_clone()
    }
}

#[cfg(test)]
mod tests;
