//! Image operations for the `image-ops` Berth example.
//!
//! The binary is a CGI-style filter: the request is in `QUERY_STRING`, the
//! image comes on stdin and the result goes to stdout. Everything that can be
//! tested without a process boundary lives here so unit tests can drive it.

mod font;

use std::fmt;
use std::io::{Cursor, Read};

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits, Rgba, RgbaImage};

/// Largest request body accepted; a function's stdin is memory we pay for.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Largest side, for decoded images as well as requested output sizes. It also
/// happens to be the WebP format's own limit, so every output format can hold it.
pub const MAX_DIMENSION: u32 = 16_384;

/// The decoder's allocation budget, so a tiny compressed file cannot expand
/// into gigabytes of pixels.
pub const MAX_DECODE_ALLOC: u64 = 512 * 1024 * 1024;

/// Cap on output pixels: an upscale stays within the same memory envelope as
/// the largest image we are willing to decode (RGBA8).
const MAX_OUTPUT_PIXELS: u64 = MAX_DECODE_ALLOC / 4;

/// Longest watermark; more could never fit legibly and only costs time.
const MAX_WATERMARK_CHARS: usize = 256;

/// JPEG quality for re-encoding; the encoder's default (75) visibly degrades
/// thumbnails and text.
const JPEG_QUALITY: u8 = 85;

/// Failure of a request, split by whose fault it is so `main` can pick the
/// exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The query or the input image is unacceptable (exit code 2).
    BadInput(String),
    /// Something went wrong on our side (exit code 1).
    Internal(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::BadInput(_) => 2,
            Error::Internal(_) => 1,
        }
    }

    fn bad(msg: impl Into<String>) -> Self {
        Error::BadInput(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            Error::BadInput(m) | Error::Internal(m) => m,
        };
        // Callers log one line per failure; decoder messages may embed newlines.
        let one_line: String = msg
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        f.write_str(&one_line)
    }
}

impl std::error::Error for Error {}

/// Output formats the binary can write, mirroring the enabled `image` features.
const OUTPUT_FORMATS: [ImageFormat; 6] = [
    ImageFormat::Png,
    ImageFormat::Jpeg,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

/// Right angles only: arbitrary angles would need resampling and a background
/// colour, which this example does not try to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    Deg90,
    Deg180,
    Deg270,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// At least one of `width`/`height` is set.
    Thumbnail {
        width: Option<u32>,
        height: Option<u32>,
    },
    Rotate(Rotation),
    Convert,
    Watermark {
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    /// `None` means "same as the input".
    pub format: Option<ImageFormat>,
}

/// Parses a CGI query string such as `op=thumbnail&w=128`.
///
/// Unknown or repeated parameters are rejected rather than ignored: a typo like
/// `width=` silently producing an unresized image is worse than an error.
pub fn parse_query(query: &str) -> Result<Request, Error> {
    let mut op = None;
    let mut w = None;
    let mut h = None;
    let mut deg = None;
    let mut format = None;
    let mut text = None;

    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            "op" => &mut op,
            "w" => &mut w,
            "h" => &mut h,
            "deg" => &mut deg,
            "format" => &mut format,
            "text" => &mut text,
            other => return Err(Error::bad(format!("unknown parameter {other:?}"))),
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(Error::bad(format!(
                "parameter {key:?} given more than once"
            )));
        }
    }

    let op_name = op.ok_or_else(|| Error::bad("missing parameter \"op\""))?;
    let format = format.as_deref().map(parse_format).transpose()?;

    let allowed: &[(&str, bool)] = &[
        ("w", w.is_some()),
        ("h", h.is_some()),
        ("deg", deg.is_some()),
        ("text", text.is_some()),
    ];
    let reject_extra = |permitted: &[&str]| -> Result<(), Error> {
        match allowed
            .iter()
            .find(|(name, present)| *present && !permitted.contains(name))
        {
            Some((name, _)) => Err(Error::bad(format!(
                "parameter {name:?} does not apply to op={op_name}"
            ))),
            None => Ok(()),
        }
    };

    let op = match op_name.as_str() {
        "thumbnail" => {
            reject_extra(&["w", "h"])?;
            let width = w.as_deref().map(|v| parse_dimension("w", v)).transpose()?;
            let height = h.as_deref().map(|v| parse_dimension("h", v)).transpose()?;
            if width.is_none() && height.is_none() {
                return Err(Error::bad("op=thumbnail needs \"w\" and/or \"h\""));
            }
            Op::Thumbnail { width, height }
        }
        "rotate" => {
            reject_extra(&["deg"])?;
            let deg = deg.ok_or_else(|| Error::bad("op=rotate needs \"deg\""))?;
            let rotation = match deg.as_str() {
                "90" => Rotation::Deg90,
                "180" => Rotation::Deg180,
                "270" => Rotation::Deg270,
                other => {
                    return Err(Error::bad(format!(
                        "unsupported rotation {other:?}: use 90, 180 or 270"
                    )));
                }
            };
            Op::Rotate(rotation)
        }
        "convert" => {
            reject_extra(&[])?;
            if format.is_none() {
                return Err(Error::bad("op=convert needs \"format\""));
            }
            Op::Convert
        }
        "watermark" => {
            reject_extra(&["text"])?;
            let text = text.unwrap_or_default();
            if text.trim().is_empty() {
                return Err(Error::bad("op=watermark needs a non-empty \"text\""));
            }
            if text.chars().count() > MAX_WATERMARK_CHARS {
                return Err(Error::bad(format!(
                    "watermark text longer than {MAX_WATERMARK_CHARS} characters"
                )));
            }
            Op::Watermark { text }
        }
        other => {
            return Err(Error::bad(format!(
                "unknown op {other:?}: use thumbnail, rotate, convert or watermark"
            )));
        }
    };

    Ok(Request { op, format })
}

fn parse_format(name: &str) -> Result<ImageFormat, Error> {
    match name.to_ascii_lowercase().as_str() {
        "png" => Ok(ImageFormat::Png),
        "jpeg" | "jpg" => Ok(ImageFormat::Jpeg),
        "webp" => Ok(ImageFormat::WebP),
        "gif" => Ok(ImageFormat::Gif),
        "bmp" => Ok(ImageFormat::Bmp),
        "tiff" | "tif" => Ok(ImageFormat::Tiff),
        _ => Err(Error::bad(format!(
            "unsupported format {name:?}: use png, jpeg, webp, gif, bmp or tiff"
        ))),
    }
}

fn parse_dimension(name: &str, value: &str) -> Result<u32, Error> {
    match value.parse::<u32>() {
        Ok(n) if (1..=MAX_DIMENSION).contains(&n) => Ok(n),
        _ => Err(Error::bad(format!(
            "parameter {name:?} must be an integer from 1 to {MAX_DIMENSION}, got {value:?}"
        ))),
    }
}

/// Reads at most `cap` bytes; one byte more means the input is too large.
pub fn read_capped(mut reader: impl Read, cap: u64) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    reader
        .by_ref()
        .take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Error::Internal(format!("reading input: {e}")))?;
    if buf.len() as u64 > cap {
        return Err(Error::bad(format!(
            "input larger than {cap} bytes ({} MiB)",
            cap / (1024 * 1024)
        )));
    }
    Ok(buf)
}

/// Decodes `bytes`, returning the image and the format it was sniffed as.
pub fn decode(bytes: &[u8]) -> Result<(DynamicImage, Option<ImageFormat>), Error> {
    if bytes.is_empty() {
        return Err(Error::bad("empty input: send an image on stdin"));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Internal(format!("sniffing input format: {e}")))?;
    let format = reader.format();
    if format.is_none() {
        return Err(Error::bad("input is not a recognised image format"));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    // Any failure here, I/O included (a truncated file reads past the end of
    // the in-memory buffer), is a property of the input, not of this process.
    let img = reader
        .decode()
        .map_err(|e| Error::bad(format!("cannot decode input image: {e}")))?;
    Ok((img, format))
}

/// Applies `op` to `img`.
pub fn apply(img: DynamicImage, op: &Op) -> Result<DynamicImage, Error> {
    match op {
        Op::Thumbnail { width, height } => {
            let (w, h) = thumbnail_size(img.width(), img.height(), *width, *height)?;
            Ok(resample(&img, w, h))
        }
        Op::Rotate(Rotation::Deg90) => Ok(img.rotate90()),
        Op::Rotate(Rotation::Deg180) => Ok(img.rotate180()),
        Op::Rotate(Rotation::Deg270) => Ok(img.rotate270()),
        Op::Convert => Ok(img),
        Op::Watermark { text } => Ok(watermark(img, text)),
    }
}

/// Output size for a thumbnail request, keeping the source aspect ratio.
///
/// A single given side is honoured exactly (callers rely on e.g. a fixed width
/// for layout); with both, the image is fitted inside the box.
pub fn thumbnail_size(
    src_w: u32,
    src_h: u32,
    width: Option<u32>,
    height: Option<u32>,
) -> Result<(u32, u32), Error> {
    if src_w == 0 || src_h == 0 {
        return Err(Error::bad("input image has no pixels"));
    }
    let (sw, sh) = (u64::from(src_w), u64::from(src_h));
    // Integer rounding (a * b / c to nearest) avoids float edge cases such as
    // 128 * 200 / 300 landing on 85.33 vs 85.
    let scale = |a: u32, num: u64, den: u64| ((u64::from(a) * num + den / 2) / den).max(1);
    let (w, h) = match (width, height) {
        (Some(w), None) => (u64::from(w), scale(w, sh, sw)),
        (None, Some(h)) => (scale(h, sw, sh), u64::from(h)),
        (Some(w), Some(h)) => {
            // Width-bound when w/sw <= h/sh, compared without division.
            if u64::from(w) * sh <= u64::from(h) * sw {
                (u64::from(w), scale(w, sh, sw).min(u64::from(h)))
            } else {
                (scale(h, sw, sh).min(u64::from(w)), u64::from(h))
            }
        }
        (None, None) => return Err(Error::bad("thumbnail needs a width or a height")),
    };
    let max = u64::from(MAX_DIMENSION);
    if w > max || h > max || w * h > MAX_OUTPUT_PIXELS {
        return Err(Error::bad(format!(
            "thumbnail would be {w}x{h}, larger than the {MAX_DIMENSION}px / {MAX_OUTPUT_PIXELS} pixel limit"
        )));
    }
    // Both values are at most MAX_DIMENSION here, so the casts cannot truncate.
    Ok((w as u32, h as u32))
}

fn resample(img: &DynamicImage, w: u32, h: u32) -> DynamicImage {
    // Lanczos3 cost grows with the shrink ratio; a cheap box-filter pass down to
    // twice the target first keeps large downscales fast at no visible cost.
    let (big_w, big_h) = (w.saturating_mul(4), h.saturating_mul(4));
    if img.width() >= big_w && img.height() >= big_h {
        img.thumbnail_exact(w * 2, h * 2)
            .resize_exact(w, h, FilterType::Lanczos3)
    } else {
        img.resize_exact(w, h, FilterType::Lanczos3)
    }
}

/// Fill and outline colours: readable on both light and dark photos without
/// hiding what is underneath.
const FILL: Rgba<u8> = Rgba([255, 255, 255, 190]);
const OUTLINE: Rgba<u8> = Rgba([0, 0, 0, 150]);

/// Draws `text` in the bottom-right corner using the built-in bitmap font.
///
/// Glyphs are scaled so the text is about 1/20 of the image height; if it is
/// too wide the scale shrinks, and at scale 1 trailing characters are dropped.
pub fn watermark(img: DynamicImage, text: &str) -> DynamicImage {
    let had_alpha = img.has_alpha();
    let mut canvas = img.into_rgba8();
    let (iw, ih) = canvas.dimensions();

    let advance = font::GLYPH_WIDTH + 1;
    let margin = (ih.min(iw) / 40).max(2);
    let avail_w = iw.saturating_sub(2 * margin);
    let chars: Vec<char> = text.chars().collect();
    let text_cells = |n: usize, scale: u32| -> u64 {
        // Trailing inter-glyph gap is not drawn, so it does not need room.
        (n as u64 * u64::from(advance)).saturating_sub(1) * u64::from(scale)
    };

    let mut scale = ((ih + 10 * font::GLYPH_HEIGHT) / (20 * font::GLYPH_HEIGHT)).max(1);
    while scale > 1 && text_cells(chars.len(), scale) > u64::from(avail_w) {
        scale -= 1;
    }
    let fit = (avail_w as usize + 1) / advance as usize;
    let chars = &chars[..chars.len().min(fit)];
    if chars.is_empty() {
        return restore_alpha_choice(canvas, had_alpha);
    }

    let outline = (scale / 3).max(1);
    let text_w = text_cells(chars.len(), scale) as u32;
    let text_h = font::GLYPH_HEIGHT * scale;
    // Mask covers the text plus room for the outline on every side.
    let mask_w = text_w + 2 * outline;
    let mask_h = text_h + 2 * outline;
    let mut ink = vec![false; (mask_w * mask_h) as usize];
    for (i, &c) in chars.iter().enumerate() {
        let x0 = i as u32 * advance * scale + outline;
        for gy in 0..font::GLYPH_HEIGHT {
            for gx in 0..font::GLYPH_WIDTH {
                if !font::is_set(c, gx, gy) {
                    continue;
                }
                for dy in 0..scale {
                    let row = (outline + gy * scale + dy) * mask_w;
                    let start = (row + x0 + gx * scale) as usize;
                    ink[start..start + scale as usize].fill(true);
                }
            }
        }
    }
    let halo = dilate(&ink, mask_w as usize, mask_h as usize, outline as usize);

    // Anchor the mask's bottom-right corner at the margin; the subtraction
    // saturates so a tiny image is clipped rather than underflowing.
    let left = i64::from(iw) - i64::from(margin) - i64::from(mask_w);
    let top = i64::from(ih) - i64::from(margin) - i64::from(mask_h);
    for my in 0..mask_h {
        let y = top + i64::from(my);
        if y < 0 || y >= i64::from(ih) {
            continue;
        }
        for mx in 0..mask_w {
            let x = left + i64::from(mx);
            if x < 0 || x >= i64::from(iw) {
                continue;
            }
            let idx = (my * mask_w + mx) as usize;
            let color = if ink[idx] {
                FILL
            } else if halo[idx] {
                OUTLINE
            } else {
                continue;
            };
            let px = canvas.get_pixel_mut(x as u32, y as u32);
            *px = blend_over(*px, color);
        }
    }
    restore_alpha_choice(canvas, had_alpha)
}

fn restore_alpha_choice(canvas: RgbaImage, had_alpha: bool) -> DynamicImage {
    let img = DynamicImage::ImageRgba8(canvas);
    // An opaque input stays opaque so e.g. JPEG output needs no alpha dropping.
    if had_alpha {
        img
    } else {
        DynamicImage::ImageRgb8(img.into_rgb8())
    }
}

/// Square dilation by `r` pixels, done as two 1-D passes so cost is linear in r.
fn dilate(mask: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
    let mut horiz = vec![false; mask.len()];
    for y in 0..h {
        let row = &mask[y * w..(y + 1) * w];
        for x in 0..w {
            let lo = x.saturating_sub(r);
            let hi = (x + r).min(w - 1);
            horiz[y * w + x] = row[lo..=hi].iter().any(|&b| b);
        }
    }
    let mut out = vec![false; mask.len()];
    for x in 0..w {
        for y in 0..h {
            let lo = y.saturating_sub(r);
            let hi = (y + r).min(h - 1);
            out[y * w + x] = (lo..=hi).any(|yy| horiz[yy * w + x]);
        }
    }
    out
}

/// Porter-Duff "source over" for straight (non-premultiplied) RGBA8.
fn blend_over(dst: Rgba<u8>, src: Rgba<u8>) -> Rgba<u8> {
    let sa = f32::from(src[3]) / 255.0;
    let da = f32::from(dst[3]) / 255.0;
    let out_a = sa + da * (1.0 - sa);
    if out_a <= 0.0 {
        return Rgba([0, 0, 0, 0]);
    }
    let mut out = [0u8; 4];
    for c in 0..3 {
        let v = (f32::from(src[c]) * sa + f32::from(dst[c]) * da * (1.0 - sa)) / out_a;
        out[c] = v.round().clamp(0.0, 255.0) as u8;
    }
    out[3] = (out_a * 255.0).round().clamp(0.0, 255.0) as u8;
    Rgba(out)
}

/// Encodes `img` as `format`. Colour types the format cannot hold (alpha in
/// JPEG, 16-bit in BMP, ...) are converted by `image` on the way out.
pub fn encode(img: &DynamicImage, format: ImageFormat) -> Result<Vec<u8>, Error> {
    let mut out = Cursor::new(Vec::new());
    let result = if format == ImageFormat::Jpeg {
        img.write_with_encoder(JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY))
    } else {
        img.write_to(&mut out, format)
    };
    result.map_err(|e| Error::Internal(format!("encoding {format:?}: {e}")))?;
    Ok(out.into_inner())
}

/// Output format for a request: explicit choice, else the input's own format
/// when we can write it, else PNG (lossless and universally readable).
pub fn output_format(requested: Option<ImageFormat>, input: Option<ImageFormat>) -> ImageFormat {
    requested
        .or(input.filter(|f| OUTPUT_FORMATS.contains(f)))
        .unwrap_or(ImageFormat::Png)
}

/// The whole request: parse, decode, transform, encode.
pub fn run(query: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
    let request = parse_query(query)?;
    process(&request, input)
}

/// Like [`run`] for an already parsed request, so `main` can reject a bad query
/// before reading a possibly large stdin.
pub fn process(request: &Request, input: &[u8]) -> Result<Vec<u8>, Error> {
    let (img, input_format) = decode(input)?;
    let out = apply(img, &request.op)?;
    encode(&out, output_format(request.format, input_format))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GenericImageView, Rgb, RgbImage};

    fn gradient(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
        }))
    }

    fn png_bytes(img: &DynamicImage) -> Vec<u8> {
        encode(img, ImageFormat::Png).expect("encode png")
    }

    fn decoded(bytes: &[u8]) -> (DynamicImage, ImageFormat) {
        let (img, fmt) = decode(bytes).expect("decode output");
        (img, fmt.expect("format"))
    }

    #[test]
    fn thumbnail_width_keeps_aspect() {
        let out = run("op=thumbnail&w=128", &png_bytes(&gradient(300, 200))).unwrap();
        let (img, fmt) = decoded(&out);
        assert_eq!(fmt, ImageFormat::Png, "default output follows the input");
        assert_eq!(img.dimensions(), (128, 85));
    }

    #[test]
    fn thumbnail_height_only_and_box() {
        let src = png_bytes(&gradient(300, 200));
        let (img, _) = decoded(&run("op=thumbnail&h=50", &src).unwrap());
        assert_eq!(img.dimensions(), (75, 50));
        // Box narrower than the aspect: width-bound.
        let (img, _) = decoded(&run("op=thumbnail&w=100&h=100", &src).unwrap());
        assert_eq!(img.dimensions(), (100, 67));
        // Box wider than the aspect: height-bound.
        let (img, _) = decoded(&run("op=thumbnail&w=1000&h=40", &src).unwrap());
        assert_eq!(img.dimensions(), (60, 40));
    }

    #[test]
    fn thumbnail_large_downscale_uses_exact_size() {
        let out = apply(
            gradient(1200, 900),
            &Op::Thumbnail {
                width: Some(64),
                height: None,
            },
        )
        .unwrap();
        assert_eq!(out.dimensions(), (64, 48));
    }

    #[test]
    fn thumbnail_rejects_absurd_upscale() {
        let err = thumbnail_size(1, 1000, Some(MAX_DIMENSION), None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn rotate_swaps_dimensions() {
        let src = png_bytes(&gradient(300, 200));
        let (img, _) = decoded(&run("op=rotate&deg=90", &src).unwrap());
        assert_eq!(img.dimensions(), (200, 300));
        let (img, _) = decoded(&run("op=rotate&deg=180", &src).unwrap());
        assert_eq!(img.dimensions(), (300, 200));
        let (img, _) = decoded(&run("op=rotate&deg=270", &src).unwrap());
        assert_eq!(img.dimensions(), (200, 300));
    }

    #[test]
    fn rotate_other_angles_are_bad_input() {
        for q in ["op=rotate&deg=45", "op=rotate&deg=-90", "op=rotate"] {
            assert_eq!(parse_query(q).unwrap_err().exit_code(), 2, "{q}");
        }
    }

    #[test]
    fn convert_to_png_from_jpeg() {
        let jpeg = encode(&gradient(300, 200), ImageFormat::Jpeg).unwrap();
        assert_eq!(decoded(&jpeg).1, ImageFormat::Jpeg);
        let out = run("op=convert&format=png", &jpeg).unwrap();
        assert!(out.starts_with(b"\x89PNG\r\n\x1a\n"));
        let (img, fmt) = decoded(&out);
        assert_eq!(fmt, ImageFormat::Png);
        assert_eq!(img.dimensions(), (300, 200));
    }

    #[test]
    fn convert_round_trips_every_format_with_alpha() {
        // RGBA input exercises the colour conversion JPEG/BMP/GIF need.
        let rgba = DynamicImage::ImageRgba8(gradient(40, 30).into_rgba8());
        let src = png_bytes(&rgba);
        for (name, want) in [
            ("png", ImageFormat::Png),
            ("jpeg", ImageFormat::Jpeg),
            ("jpg", ImageFormat::Jpeg),
            ("webp", ImageFormat::WebP),
            ("gif", ImageFormat::Gif),
            ("bmp", ImageFormat::Bmp),
            ("tiff", ImageFormat::Tiff),
        ] {
            let out = run(&format!("op=convert&format={name}"), &src)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let (img, fmt) = decoded(&out);
            assert_eq!(fmt, want, "{name}");
            assert_eq!(img.dimensions(), (40, 30), "{name}");
        }
    }

    #[test]
    fn format_applies_to_any_op() {
        let src = png_bytes(&gradient(300, 200));
        let out = run("op=rotate&deg=90&format=webp", &src).unwrap();
        let (img, fmt) = decoded(&out);
        assert_eq!(fmt, ImageFormat::WebP);
        assert_eq!(img.dimensions(), (200, 300));
    }

    #[test]
    fn watermark_keeps_size_and_changes_pixels() {
        let src = gradient(300, 200);
        let out = run("op=watermark&text=Berth%20%C2%A9%202025", &png_bytes(&src)).unwrap();
        let (img, _) = decoded(&out);
        assert_eq!(img.dimensions(), (300, 200));
        let (before, after) = (src.to_rgb8(), img.to_rgb8());
        let changed = before
            .pixels()
            .zip(after.pixels())
            .filter(|(a, b)| a != b)
            .count();
        assert!(changed > 50, "only {changed} pixels changed");
        // The top-left corner is far from the bottom-right watermark.
        assert_eq!(before.get_pixel(0, 0), after.get_pixel(0, 0));
    }

    #[test]
    fn watermark_preserves_alpha_and_survives_tiny_images() {
        let rgba = DynamicImage::ImageRgba8(RgbaImage::from_pixel(64, 64, Rgba([0, 0, 0, 0])));
        let out = watermark(rgba, "hi");
        assert!(out.has_alpha());
        assert!(out.to_rgba8().pixels().any(|p| p[3] > 0));

        for (w, h) in [(1, 1), (3, 50), (50, 3)] {
            let out = watermark(gradient(w, h), "a very long watermark text");
            assert_eq!(out.dimensions(), (w, h));
        }
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let req = parse_query("op=watermark&text=hello+w%C3%B6rld%21").unwrap();
        assert_eq!(
            req.op,
            Op::Watermark {
                text: "hello wörld!".into()
            }
        );
    }

    #[test]
    fn bad_queries_are_errors() {
        for q in [
            "",
            "op=",
            "op=blur",
            "op=thumbnail",
            "op=thumbnail&w=0",
            "op=thumbnail&w=abc",
            "op=thumbnail&w=99999",
            "op=thumbnail&w=10&w=20",
            "op=thumbnail&width=10",
            "op=thumbnail&w=10&deg=90",
            "op=convert",
            "op=convert&format=svg",
            "op=watermark",
            "op=watermark&text=%20",
        ] {
            let err = parse_query(q).expect_err(q);
            assert_eq!(err.exit_code(), 2, "{q}: {err}");
        }
    }

    #[test]
    fn undecodable_input_is_bad_input() {
        for input in [
            &b""[..],
            b"not an image",
            &png_bytes(&gradient(30, 20))[..40],
        ] {
            let err = run("op=rotate&deg=90", input).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
        }
    }

    #[test]
    fn decompression_bomb_is_rejected() {
        // A valid PNG header claiming 100000x100000 pixels; the limits must stop
        // it before any pixel buffer is allocated.
        let mut png = Vec::new();
        png.extend_from_slice(b"\x89PNG\r\n\x1a\n");
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(b"IHDR");
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        let err = decode(&png).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn input_cap_is_enforced() {
        assert_eq!(read_capped(&b"12345"[..], 5).unwrap(), b"12345");
        let err = read_capped(&b"123456"[..], 5).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn error_display_is_one_line() {
        let e = Error::Internal("a\nb\r\nc".into());
        assert_eq!(e.to_string(), "a b  c");
        assert_eq!(e.exit_code(), 1);
    }
}
