use super::*;
use crate::data::{pack::pack, DataSpec, Format};

fn spec(format: Format, name: &str, dir: &Path) -> DataSpec {
    DataSpec { name: name.into(), format, dir: dir.to_path_buf() }
}

/// A tiny ImageFolder (5 train images in 2 classes, one grey) packed with 2 images per shard.
fn packed() -> (tempfile::TempDir, DataSpec, DataSpec) {
    let d = tempfile::tempdir().unwrap();
    folder::tests::tree(&d.path().join("src"));
    let src = spec(Format::Folder, "folder", &d.path().join("src"));
    pack(&src, &d.path().join("wds"), 2, &LoadOptions::default()).unwrap();
    let wds = spec(Format::Wds, "wds", &d.path().join("wds"));
    (d, src, wds)
}

#[test]
fn keys_split_at_the_first_dot_of_the_file_name() {
    assert_eq!(key_and_ext("a/b.c/000001.seg.png"), Some(("a/b.c/000001", "seg.png")));
    assert_eq!(key_and_ext("000001.jpg"), Some(("000001", "jpg")));
    assert_eq!(key_and_ext("dir.x/noext"), None);
}

#[test]
fn packed_folder_reads_back_image_for_image() {
    let (d, src, wds) = packed();
    for split in [Split::Train, Split::Test] {
        let a = crate::data::load(&src, split, &LoadOptions::default()).unwrap();
        let b = crate::data::load(&wds, split, &LoadOptions::default()).unwrap();
        assert_eq!((&a.labels, &a.class_names, a.num_classes, a.channels()), (&b.labels, &b.class_names, b.num_classes, b.channels()));
        assert!(b.is_streamed() && b.images.is_empty() && b.files.is_empty());
        for i in 0..a.len() {
            assert_eq!(a.image(i).unwrap(), b.image(i).unwrap(), "{split:?} image {i}");
        }
    }
    // 6 train images at 2 per shard; the files copied byte for byte
    assert_eq!(shard_paths(&d.path().join("wds/train")).unwrap().len(), 3);
    let b = crate::data::load(&wds, Split::Train, &LoadOptions::default()).unwrap();
    assert_eq!(read(&b.shards, &b.members[0]).unwrap(), std::fs::read(d.path().join("src/train/cat/0.png")).unwrap());
    assert_eq!(std::fs::read_to_string(d.path().join("wds/classes.txt")).unwrap(), "cat\ndog\n");
}

#[test]
fn images_in_memory_are_packed_losslessly() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("idx")).unwrap();
    crate::data::testutil::write_idx_dir(&d.path().join("idx"), 7, 3, 5, false);
    let src = spec(Format::Idx, "idx", &d.path().join("idx"));
    pack(&src, &d.path().join("wds"), 4, &LoadOptions::default()).unwrap();
    let a = crate::data::load(&src, Split::Train, &LoadOptions::default()).unwrap();
    let b = crate::data::load(&spec(Format::Wds, "wds", &d.path().join("wds")), Split::Train, &LoadOptions::default()).unwrap();
    assert_eq!(a.labels, b.labels);
    assert!((0..a.len()).all(|i| a.image(i).unwrap() == b.image(i).unwrap()));
    // pack refuses to write into a folder that holds something
    let e = format!("{:#}", pack(&src, &d.path().join("wds"), 4, &LoadOptions::default()).err().unwrap());
    assert!(e.contains("exists and is not empty"), "{e}");
}

/// Writes `dir/train/x.tar` from (name, bytes) members.
fn write_tar(dir: &Path, members: &[(&str, &[u8])]) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *data).unwrap();
    }
    let p = dir.join("train/x.tar");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    p
}

fn png() -> Vec<u8> {
    let mut v = vec![];
    image::GrayImage::from_pixel(3, 2, image::Luma([9])).write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Png).unwrap();
    v
}

fn load_err(dir: &Path) -> String {
    format!("{:#}", load(dir, Split::Train, &LoadOptions::default()).unwrap_err())
}

#[test]
fn samples_group_by_key_and_bad_shards_are_named() {
    let d = tempfile::tempdir().unwrap();
    let img = png();
    // a: image + class; b: no image (skipped); c: image without class (-1)
    write_tar(d.path(), &[("a.cls", b"1"), ("a.png", &img), ("b.cls", b"0"), ("c.png", &img), ("c.txt", b"x")]);
    let ds = load(d.path(), Split::Train, &LoadOptions::default()).unwrap();
    assert_eq!((ds.labels.clone(), ds.num_classes), (vec![1, -1], 2));
    assert_eq!(ds.image(1).unwrap().data, vec![9; 6]);
    // a class that is not an integer
    write_tar(d.path(), &[("a.png", &img), ("a.cls", b"cat")]);
    let e = load_err(d.path());
    assert!(e.contains("x.tar") && e.contains("a.cls") && e.contains("expected an integer class"), "{e}");
    // a truncated shard
    let p = write_tar(d.path(), &[("a.png", &img), ("a.cls", b"0")]);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..600]).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("x.tar") && (e.contains("truncated") || e.contains("not a readable tar shard")), "{e}");
    // not a tar file at all, and a class beyond classes.txt
    std::fs::write(&p, vec![7u8; 2000]).unwrap();
    assert!(load_err(d.path()).contains("not a readable tar shard"));
    write_tar(d.path(), &[("a.png", &img), ("a.cls", b"5")]);
    std::fs::write(d.path().join(CLASSES_FILE), "x\ny\n").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("class 5 out of range"), "{e}");
    // no shards
    std::fs::remove_file(&p).unwrap();
    assert!(load_err(d.path()).contains("no .tar shards"));
}

#[test]
fn buffered_order_reads_shards_in_turn_and_is_seeded() {
    use rand::SeedableRng;
    let members: Vec<Member> = (0..30).map(|i| Member { shard: i / 10, offset: 0, len: 0 }).collect();
    let rng = |s| rand_chacha::ChaCha8Rng::seed_from_u64(s);
    // buffer 1: whole shards in a shuffled order, each front to back
    let o = buffered_order(&members, 1, &mut rng(3));
    let shards: Vec<usize> = o.chunks(10).map(|c| c[0] / 10).collect();
    for (c, s) in o.chunks(10).zip(&shards) {
        assert_eq!(c, (s * 10..s * 10 + 10).collect::<Vec<_>>());
    }
    // a larger buffer mixes neighbours; always a permutation, the same for the same seed
    let o = buffered_order(&members, 8, &mut rng(3));
    let mut sorted = o.clone();
    sorted.sort();
    assert_eq!(sorted, (0..30).collect::<Vec<_>>());
    assert_eq!(o, buffered_order(&members, 8, &mut rng(3)));
    assert_ne!(o, buffered_order(&members, 8, &mut rng(4)));
    // the first sample out is one of the first 8 of the first shard read (the same shard order:
    // the shards are shuffled first)
    assert!((shards[0] * 10..shards[0] * 10 + 8).contains(&o[0]), "{o:?}");
}
