//! Hand-written pickles for the tests of the `.pth` reader (shared by its unit tests and the
//! bad-input suite).

fn int(p: &mut Vec<u8>, v: i64) {
    p.extend_from_slice(&[0x8a, 8]);
    p.extend_from_slice(&v.to_le_bytes());
}

/// `{name: _rebuild_tensor_v2(storage "0" of `numel` floats, offset, size, stride)}` as protocol 2.
pub fn tensor_pickle(name: &str, numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'X'];
    p.extend_from_slice(&(name.len() as u32).to_le_bytes());
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\0\0\0storagectorch\nFloatStorage\nX\x01\0\0\0\x30X\x03\0\0\0cpu");
    int(&mut p, numel);
    p.extend_from_slice(b"tQ");
    int(&mut p, offset);
    for dims in [size, stride] {
        p.push(b'(');
        dims.iter().for_each(|&d| int(&mut p, d));
        p.push(b't');
    }
    p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtRs.");
    p
}
