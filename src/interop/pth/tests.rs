use super::*;
use tch::Device;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn write_then_read_roundtrips_kinds_and_shapes() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("x.pth");
    let named = vec![
        ("conv1.weight".to_string(), Tensor::arange(24, (Kind::Float, Device::Cpu)).view([2, 3, 2, 2])),
        ("bn1.num_batches_tracked".to_string(), Tensor::from(7i64)),
        ("big".to_string(), Tensor::full([3], 3e9_f64, (Kind::Double, Device::Cpu))),
        ("empty".to_string(), Tensor::zeros([0, 4], (Kind::Float, Device::Cpu))),
    ];
    write_pth(&named, &path).unwrap();
    let back = read_pth(&path).unwrap();
    assert_eq!(back.len(), named.len());
    for ((n1, t1), (n2, t2)) in named.iter().zip(&back) {
        assert_eq!(n1, n2);
        assert_eq!((t1.size(), t1.kind()), (t2.size(), t2.kind()), "{n1}");
        assert!(t1.equal(t2), "{n1}");
    }
}

#[test]
fn a_full_disk_is_one_error_and_the_writer_finishes_quietly() {
    let named = vec![("w".to_string(), Tensor::arange(1000, (Kind::Float, Device::Cpu)))];
    let (pickle, storages) = state_dict_pickle(&named).unwrap();
    // room for the first entries only: the storage's 4,000 bytes do not fit
    let mut room = vec![0u8; 600];
    let e = torch_save_archive(Quiet::new(std::io::Cursor::new(&mut room[..])), &pickle, &storages).unwrap_err();
    assert!(format!("{e:#}").contains("write zero"), "{e:#}");
    // after the first error the writer carries on as if written, keeping positions
    let mut q = Quiet::new(std::io::Cursor::new(&mut room[..10]));
    assert!(q.write_all(&[1; 20]).is_err());
    assert_eq!(q.write(&[2; 5]).unwrap(), 5);
    use std::io::Seek;
    assert_eq!(q.stream_position().unwrap(), 15);
    assert_eq!(q.seek(std::io::SeekFrom::End(-3)).unwrap(), 12);
    assert_eq!(q.seek(std::io::SeekFrom::Start(2)).unwrap(), 2);
}

/// `tests/fixtures/torch_checkpoint.pth` was written by PyTorch 2.11 (scripts/fixtures/make_pth.py):
/// a DINO-style nested checkpoint with a view that starts at an offset into a shared storage.
#[test]
fn reads_a_checkpoint_written_by_pytorch() {
    let t: std::collections::BTreeMap<String, Tensor> = read_pth(&fixture("torch_checkpoint.pth")).unwrap().into_iter().collect();
    let w = &t["teacher.backbone.conv1.weight"];
    assert_eq!(w.size(), vec![2, 3]);
    assert!(w.equal(&Tensor::from_slice(&[0.0f32, 0.5, 1.0, 1.5, 2.0, 2.5]).view([2, 3])));
    // student.module.backbone.view = arange(10)[4:8] (offset 4 into a 10-element storage)
    assert!(t["student.module.backbone.view"].equal(&Tensor::from_slice(&[4i64, 5, 6, 7])));
    // a transposed (non-contiguous) tensor
    assert!(t["teacher.backbone.t"].equal(&Tensor::from_slice(&[1.0f64, 3.0, 2.0, 4.0]).view([2, 2])));
    assert_eq!(t["teacher.backbone.bn1.num_batches_tracked"].int64_value(&[]), 11);
    // non-tensor entries (epoch, args) are skipped
    assert!(!t.keys().any(|k| k.contains("epoch") || k.contains("args")));
}

#[test]
fn bad_files_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("legacy.pth");
    std::fs::write(&p, b"\x80\x02not a zip").unwrap();
    let e = read_pth(&p).unwrap_err().to_string();
    assert!(e.contains("legacy.pth") && e.contains("zip"), "{e}");
}

/// Hostile files: a torch.save archive around a hand-written pickle and one storage `0`.
fn archive(dir: &Path, pickle: &[u8], storage: &[u8]) -> std::path::PathBuf {
    let path = dir.join("hostile.pth");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in [("archive/data.pkl", pickle), ("archive/data/0", storage)] {
        zip.start_file(name, opts).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    path
}

#[path = "../../../tests/common/pickles.rs"]
mod pickles;

fn tensor_pickle(numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    pickles::tensor_pickle("w", numel, offset, size, stride)
}

#[test]
fn a_hand_written_tensor_pickle_reads() {
    let d = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = read_pth(&archive(d.path(), &tensor_pickle(6, 1, &[2, 2], &[1, 2]), &bytes)).unwrap();
    assert_eq!(t[0].0, "w");
    assert!(t[0].1.equal(&Tensor::from_slice(&[2.0f32, 4.0, 3.0, 5.0]).view([2, 2])));
}

#[test]
fn hostile_views_are_errors_before_any_storage_is_read() {
    let d = tempfile::tempdir().unwrap();
    let four = [0u8; 16];
    for (offset, size, stride, expect) in [
        (-1, vec![2], vec![1], "negative"),
        (0, vec![-2], vec![1], "negative"),
        (0, vec![2], vec![-1], "negative"),
        (0, vec![i64::MAX, 4], vec![1, 1], "overflows"),
        (0, vec![1 << 40, 1 << 40], vec![1, 1], "overflows"),
        (0, vec![1 << 20, 1 << 16], vec![0, 0], "stride of 0"),
        (i64::MAX - 1, vec![4], vec![1], "overflow"),
        (0, vec![2, 2], vec![1], "strides"),
        (0, vec![8], vec![1], "holds 16 bytes"),
    ] {
        let e = read_pth(&archive(d.path(), &tensor_pickle(4, offset, &size, &stride), &four)).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("hostile.pth") && e.contains(expect), "{size:?} {stride:?}: {e}");
    }
}

#[test]
fn unwanted_tensors_are_placeholders_that_hold_no_memory() {
    let d = tempfile::tempdir().unwrap();
    // 2^34 elements claimed by a view of a 4-element storage would be 64 GiB if read
    let p = archive(d.path(), &tensor_pickle(1 << 34, 0, &[1 << 17, 1 << 17], &[1 << 17, 1]), &[0u8; 16]);
    let t = read_pth_where(&p, |_, size| size.iter().product::<i64>() < 1000).unwrap();
    assert_eq!(t[0].1.size(), vec![1 << 17, 1 << 17]);
    assert!(crate::util::peak_rss_mib().unwrap_or(0.0) < 4096.0);
}

#[test]
fn hostile_pickles_are_bounded() {
    let d = tempfile::tempdir().unwrap();
    let mut cases: Vec<(Vec<u8>, &str)> = vec![];
    // BINUNICODE8 with a length of 2^64 - 1
    let mut p = vec![0x80, 2, 0x8d];
    p.extend_from_slice(&u64::MAX.to_le_bytes());
    cases.push((p, "ends early"));
    // a million nested lists
    let mut p = vec![0x80, 2];
    p.extend(std::iter::repeat_n(b']', 1_000_000));
    p.extend(std::iter::repeat_n(b'a', 999_999));
    p.push(b'.');
    cases.push((p, "deeper than"));
    // a 200-byte pickle that doubles a list through its memo 60 times
    let mut p = vec![0x80, 2, b']', b'q', 0];
    for _ in 0..60 {
        p.extend_from_slice(&[b'h', 0, b'h', 0, 0x86, b'0', b'h', 0, b'h', 0, 0x86, b'q', 0]);
    }
    p.push(b'.');
    cases.push((p, "more than"));
    // an empty pickle, a stack underflow, an unknown opcode
    cases.push((vec![0x80, 2], "ends early"));
    cases.push((vec![0x80, 2, b's', b'.'], "underflow"));
    cases.push((vec![0x80, 2, 0xff], "unsupported pickle opcode"));
    for (pickle, expect) in cases {
        let e = format!("{:#}", read_pth(&archive(d.path(), &pickle, &[])).unwrap_err());
        assert!(e.contains("hostile.pth") && e.contains(expect), "{expect}: {e}");
    }
}
