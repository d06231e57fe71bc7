//! Just enough PNG to tell a rendered page from a blank one: 8-bit RGB or RGBA, not
//! interlaced (what Chromium's `--screenshot` writes), inflated by a small DEFLATE decoder
//! (RFC 1950/1951) so the tests need no image crate.

/// A decoded image: `pixels` holds `channels` bytes per pixel, rows top to bottom.
pub struct Image {
    pub width: usize,
    pub height: usize,
    channels: usize,
    pixels: Vec<u8>,
}

impl Image {
    /// How many different colours the image has, counting up to `cap`.
    pub fn distinct_colours(&self, cap: usize) -> usize {
        let mut seen: Vec<&[u8]> = Vec::new();
        for px in self.pixels.chunks_exact(self.channels) {
            if !seen.contains(&px) {
                seen.push(px);
                if seen.len() == cap {
                    break;
                }
            }
        }
        seen.len()
    }
}

pub fn decode(file: &[u8]) -> Result<Image, String> {
    let body = file
        .strip_prefix(b"\x89PNG\r\n\x1a\n")
        .ok_or("no PNG signature")?;
    let (mut header, mut data) = (None, Vec::new());
    let mut rest = body;
    while rest.len() >= 12 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let kind = &rest[4..8];
        let chunk = rest.get(8..8 + len).ok_or("truncated chunk")?;
        match kind {
            b"IHDR" => header = Some(chunk.to_vec()),
            b"IDAT" => data.extend_from_slice(chunk),
            b"IEND" => break,
            _ => {}
        }
        rest = &rest[(12 + len).min(rest.len())..];
    }
    let h = header.ok_or("no IHDR")?;
    let width = u32::from_be_bytes(h[0..4].try_into().unwrap()) as usize;
    let height = u32::from_be_bytes(h[4..8].try_into().unwrap()) as usize;
    let channels = match (h[8], h[9], h[12]) {
        (8, 2, 0) => 3,
        (8, 6, 0) => 4,
        other => return Err(format!("unsupported depth/colour/interlace {other:?}")),
    };
    let raw = inflate(data.get(2..).ok_or("no zlib header")?)?;
    let stride = width * channels;
    if raw.len() < height * (stride + 1) {
        return Err(format!(
            "{} bytes of pixel data, expected {}",
            raw.len(),
            height * (stride + 1)
        ));
    }
    let mut pixels = vec![0u8; height * stride];
    for y in 0..height {
        let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        let (above, row) = pixels.split_at_mut(y * stride);
        let prior = if y == 0 {
            None
        } else {
            Some(&above[(y - 1) * stride..])
        };
        let row = &mut row[..stride];
        for x in 0..stride {
            let a = if x >= channels { row[x - channels] } else { 0 };
            let b = prior.map_or(0, |p| p[x]);
            let c = if x >= channels {
                prior.map_or(0, |p| p[x - channels])
            } else {
                0
            };
            let predicted = match line[0] {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => paeth(a, b, c),
                f => return Err(format!("filter {f}")),
            };
            row[x] = line[1 + x].wrapping_add(predicted);
        }
    }
    Ok(Image {
        width,
        height,
        channels,
        pixels,
    })
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

/// Bits of a DEFLATE stream, least significant first.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    bit: u32,
}

impl Bits<'_> {
    fn take(&mut self, n: u32) -> Result<u32, String> {
        let mut v = 0;
        for i in 0..n {
            let byte = *self.data.get(self.pos).ok_or("deflate stream ends early")?;
            v |= u32::from((byte >> self.bit) & 1) << i;
            self.bit += 1;
            if self.bit == 8 {
                self.bit = 0;
                self.pos += 1;
            }
        }
        Ok(v)
    }
}

/// A canonical Huffman code: symbols by code length.
struct Code {
    counts: [u16; 16],
    symbols: Vec<u16>,
}

impl Code {
    fn new(lengths: &[u8]) -> Code {
        let mut counts = [0u16; 16];
        for &l in lengths {
            counts[l as usize] += 1;
        }
        counts[0] = 0;
        let mut offsets = [0u16; 16];
        for l in 1..16 {
            offsets[l] = offsets[l - 1] + counts[l - 1];
        }
        let mut symbols = vec![0; lengths.len()];
        for (s, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbols[offsets[l as usize] as usize] = s as u16;
                offsets[l as usize] += 1;
            }
        }
        Code { counts, symbols }
    }

    fn decode(&self, bits: &mut Bits) -> Result<u16, String> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= bits.take(1)? as i32;
            let count = i32::from(self.counts[len]);
            if code - first < count {
                return Ok(self.symbols[(index + code - first) as usize]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("bad Huffman code".into())
    }
}

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

fn inflate(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut bits = Bits {
        data,
        pos: 0,
        bit: 0,
    };
    let mut out = Vec::new();
    loop {
        let last = bits.take(1)? == 1;
        match bits.take(2)? {
            0 => {
                if bits.bit != 0 {
                    bits.bit = 0;
                    bits.pos += 1;
                }
                let head = data
                    .get(bits.pos..bits.pos + 4)
                    .ok_or("stored block ends early")?;
                let len = usize::from(u16::from_le_bytes([head[0], head[1]]));
                let block = data
                    .get(bits.pos + 4..bits.pos + 4 + len)
                    .ok_or("stored block ends early")?;
                out.extend_from_slice(block);
                bits.pos += 4 + len;
            }
            1 => {
                let mut lengths = [8u8; 288];
                lengths[144..256].fill(9);
                lengths[256..280].fill(7);
                inflate_block(
                    &mut bits,
                    &mut out,
                    &Code::new(&lengths),
                    &Code::new(&[5; 30]),
                )?;
            }
            2 => {
                let (lit, dist) = dynamic_codes(&mut bits)?;
                inflate_block(&mut bits, &mut out, &lit, &dist)?;
            }
            _ => return Err("reserved block type".into()),
        }
        if last {
            return Ok(out);
        }
    }
}

fn dynamic_codes(bits: &mut Bits) -> Result<(Code, Code), String> {
    const ORDER: [usize; 19] = [
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
    ];
    let nlit = bits.take(5)? as usize + 257;
    let ndist = bits.take(5)? as usize + 1;
    let ncode = bits.take(4)? as usize + 4;
    let mut code_lengths = [0u8; 19];
    for &i in &ORDER[..ncode] {
        code_lengths[i] = bits.take(3)? as u8;
    }
    let code = Code::new(&code_lengths);
    let mut lengths = Vec::with_capacity(nlit + ndist);
    while lengths.len() < nlit + ndist {
        let (value, repeat) = match code.decode(bits)? {
            s @ 0..=15 => (s as u8, 1),
            16 => (
                *lengths.last().ok_or("repeat with no length")?,
                3 + bits.take(2)?,
            ),
            17 => (0, 3 + bits.take(3)?),
            _ => (0, 11 + bits.take(7)?),
        };
        lengths.extend(std::iter::repeat_n(value, repeat as usize));
    }
    Ok((
        Code::new(&lengths[..nlit]),
        Code::new(&lengths[nlit..nlit + ndist]),
    ))
}

fn inflate_block(
    bits: &mut Bits,
    out: &mut Vec<u8>,
    lit: &Code,
    dist: &Code,
) -> Result<(), String> {
    loop {
        let symbol = lit.decode(bits)?;
        match symbol {
            0..=255 => out.push(symbol as u8),
            256 => return Ok(()),
            _ => {
                let i = usize::from(symbol - 257);
                let len = usize::from(*LENGTH_BASE.get(i).ok_or("bad length")?)
                    + bits.take(u32::from(LENGTH_EXTRA[i]))? as usize;
                let d = usize::from(dist.decode(bits)?);
                let back = usize::from(*DIST_BASE.get(d).ok_or("bad distance")?)
                    + bits.take(u32::from(DIST_EXTRA[d]))? as usize;
                let start = out.len().checked_sub(back).ok_or("distance too far back")?;
                for k in 0..len {
                    out.push(out[start + k]);
                }
            }
        }
    }
}

#[test]
fn decodes_a_tiny_png() {
    // 2×1 RGB, pixels red and white, stored (uncompressed) DEFLATE block, filter 0.
    let mut file = b"\x89PNG\r\n\x1a\n".to_vec();
    let chunk = |file: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        file.extend_from_slice(&(data.len() as u32).to_be_bytes());
        file.extend_from_slice(kind);
        file.extend_from_slice(data);
        file.extend_from_slice(&[0; 4]); // CRC, not checked
    };
    chunk(&mut file, b"IHDR", &[0, 0, 0, 2, 0, 0, 0, 1, 8, 2, 0, 0, 0]);
    let raw = [0u8, 255, 0, 0, 255, 255, 255];
    let mut zlib = vec![0x78, 0x01, 0x01, 7, 0, !7, 0xff];
    zlib.extend_from_slice(&raw);
    chunk(&mut file, b"IDAT", &zlib);
    chunk(&mut file, b"IEND", &[]);
    let image = decode(&file).unwrap();
    assert_eq!((image.width, image.height), (2, 1));
    assert_eq!(image.distinct_colours(10), 2);
}
