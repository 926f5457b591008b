//! Decode speed of the JPEG decoders svib could use, on a folder of JPEGs (one thread):
//! the `image` crate (svib today), `zune-jpeg` called directly, and libjpeg-turbo (`turbojpeg`)
//! at full size and with DCT scaling (1/2, 1/4: fewer pixels out when the crops need fewer), and
//! `jpeg-decoder` (the image crate's decoder before 0.25), full and with its reduced IDCT.
//! Usage: svib-decoder-bench DIR [ROUNDS]; prints ms per image, A B C D rounds interleaved.
use std::time::Instant;

fn files(dir: &str) -> Vec<Vec<u8>> {
    let mut out = vec![];
    let mut stack = vec![std::path::PathBuf::from(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p)
            } else if p.extension().is_some_and(|x| x == "jpg") && out.len() < 400 {
                out.push(std::fs::read(&p).unwrap())
            }
        }
    }
    out
}

fn image_crate(b: &[u8]) -> usize {
    image::load_from_memory_with_format(b, image::ImageFormat::Jpeg).unwrap().into_rgb8().len()
}

fn zune(b: &[u8]) -> usize {
    let opts = zune_core::options::DecoderOptions::default().jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB);
    zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(b), opts).decode().unwrap().len()
}

fn turbo(b: &[u8], scale: turbojpeg::ScalingFactor) -> usize {
    let mut d = turbojpeg::Decompressor::new().unwrap();
    d.set_scaling_factor(scale).unwrap();
    let h = d.read_header(b).unwrap().scaled(scale);
    let mut img = turbojpeg::Image { pixels: vec![0u8; 3 * h.width * h.height], width: h.width, pitch: 3 * h.width, height: h.height, format: turbojpeg::PixelFormat::RGB };
    d.decompress(b, img.as_deref_mut()).unwrap();
    img.pixels.len()
}

/// jpeg-decoder at full size (1) or with its reduced IDCT (1/2, 1/4, 1/8 of the size).
fn jpeg_decoder(b: &[u8], div: u16) -> usize {
    let mut d = jpeg_decoder::Decoder::new(b);
    d.read_info().unwrap();
    let i = d.info().unwrap();
    if div > 1 {
        d.scale(i.width.div_ceil(div), i.height.div_ceil(div)).unwrap();
    }
    d.decode().unwrap().len()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = files(&args[1]);
    let rounds: usize = args.get(2).map(|r| r.parse().unwrap()).unwrap_or(2);
    let one = turbojpeg::ScalingFactor::ONE;
    let half = turbojpeg::ScalingFactor::ONE_HALF;
    let quarter = turbojpeg::ScalingFactor::ONE_QUARTER;
    let cases: Vec<(&str, Box<dyn Fn(&[u8]) -> usize>)> = vec![
        ("image 0.25 (zune-jpeg inside)", Box::new(image_crate)),
        ("zune-jpeg 0.5 direct", Box::new(zune)),
        ("libjpeg-turbo full size", Box::new(move |b| turbo(b, one))),
        ("libjpeg-turbo 1/2 scale", Box::new(move |b| turbo(b, half))),
        ("libjpeg-turbo 1/4 scale", Box::new(move |b| turbo(b, quarter))),
        ("jpeg-decoder 0.3 full size", Box::new(|b| jpeg_decoder(b, 1))),
        ("jpeg-decoder 0.3 1/2 scale", Box::new(|b| jpeg_decoder(b, 2))),
        ("jpeg-decoder 0.3 1/4 scale", Box::new(|b| jpeg_decoder(b, 4))),
    ];
    println!("{} JPEGs, {} rounds, one thread", data.len(), rounds);
    for r in 0..rounds {
        for (name, f) in &cases {
            let t = Instant::now();
            let px: usize = data.iter().map(|b| f(b)).sum();
            println!("round {r} {name:<32} {:.3} ms/image ({} bytes out)", t.elapsed().as_secs_f64() * 1e3 / data.len() as f64, px);
        }
    }
}
