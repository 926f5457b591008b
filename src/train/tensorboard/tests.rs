use super::*;

/// A reader independent of the writer's encoder: TFRecord frames with both checksums checked,
/// then a generic protobuf walk that returns (field, wire type, value bytes).
fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![];
    let mut at = 0;
    while at < bytes.len() {
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        assert_eq!(u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()), masked_crc(&bytes[at..at + 8]));
        let data = &bytes[at + 12..at + 12 + len];
        assert_eq!(u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap()), masked_crc(data));
        out.push(data.to_vec());
        at += 16 + len;
    }
    out
}

fn read_varint(b: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = b[*at];
        *at += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return v;
        }
        shift += 7;
    }
}

fn fields(b: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let (mut at, mut out) = (0, vec![]);
    while at < b.len() {
        let key = read_varint(b, &mut at);
        let len = match key & 7 {
            0 => {
                let start = at;
                read_varint(b, &mut at);
                at - start
            }
            1 => 8,
            5 => 4,
            2 => read_varint(b, &mut at) as usize,
            w => panic!("wire type {w}"),
        };
        let start = if key & 7 == 0 { at - len } else { at };
        out.push((key >> 3, b[start..start + len].to_vec()));
        at = start + len;
    }
    out
}

#[test]
fn crc32c_matches_the_standard_check_value() {
    // CRC-32C of "123456789" is 0xE3069283 (RFC 3720, B.4); TFRecord's mask rotates it right
    // by 15 bits (0x27261C0D) and adds 0xA282EAD8 (worked by hand: 0xC78AB0E5)
    assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
}

#[test]
fn events_read_back_with_tags_steps_and_values() {
    let d = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(d.path(), 0).unwrap();
    w.scalars(20, &[("train/loss".into(), 5.25), ("train/lr".into(), 1e-3)]).unwrap();
    w.scalars(300, &[("knn/top1_k20".into(), 79.64)]).unwrap();
    drop(w);
    let mut w = EventWriter::create(d.path(), 140).unwrap(); // a resumed run: a second file
    w.scalars(160, &[("train/loss".into(), 4.0)]).unwrap();
    drop(w);
    let mut files: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| f.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents.")));
    let mut seen = vec![];
    for f in &files {
        for rec in records(&std::fs::read(f).unwrap()) {
            let fs = fields(&rec);
            assert_eq!(fs[0].0, 1, "wall_time first");
            assert!(f64::from_le_bytes(fs[0].1.clone().try_into().unwrap()) > 1.6e9);
            let step = read_varint(&fs[1].1, &mut 0);
            match fs[2].0 {
                3 => seen.push(format!("{step} version {}", String::from_utf8(fs[2].1.clone()).unwrap())),
                6 => seen.push(format!("{step} start {:?}", fields(&fs[2].1))),
                5 => {
                    for (_, value) in fields(&fs[2].1) {
                        let v = fields(&value);
                        let tag = String::from_utf8(v[0].1.clone()).unwrap();
                        seen.push(format!("{step} {tag}={}", f32::from_le_bytes(v[1].1.clone().try_into().unwrap())));
                    }
                }
                other => panic!("field {other}"),
            }
        }
    }
    let want =
        ["0 version brain.Event:2", "20 train/loss=5.25", "20 train/lr=0.001", "300 knn/top1_k20=79.64", "0 version brain.Event:2", "140 start [(1, [1])]", "160 train/loss=4"];
    assert_eq!(seen, want);
}
