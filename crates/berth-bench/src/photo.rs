//! A stand-in for a camera photo. Decode and resize cost depend on the
//! pixel count and on how much detail the JPEG carries (entropy-coded
//! size), so a flat test card would understate the work: this draws a
//! landscape from smooth gradients, multi-octave value noise (clouds,
//! mountains, fields), a few hard-edged shapes and per-pixel sensor grain.
//! A fixed seed and a generator defined here make every run feed the same
//! bytes.

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, RgbImage};

pub const WIDTH: u32 = 3000;
pub const HEIGHT: u32 = 2000;
/// A phone camera's usual setting; it decides how much detail survives.
const QUALITY: u8 = 90;

pub fn jpeg() -> anyhow::Result<Vec<u8>> {
    let img = draw(WIDTH, HEIGHT);
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, QUALITY).encode(
        img.as_raw(),
        img.width(),
        img.height(),
        ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}

/// SplitMix64: tiny, and its output is fixed by its definition, unlike a
/// library generator whose stream may change between versions.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Per-pixel texture in [0, 1): detail finer than any lattice.
fn speckle(x: u32, y: u32) -> f32 {
    Rng((u64::from(y) << 32) | u64::from(x)).unit()
}

/// Value noise on a square lattice, smoothly interpolated. It wraps
/// around, so texture lookups at scaled or shifted coordinates stay in it.
struct Lattice {
    cell: f32,
    cols: usize,
    rows: usize,
    vals: Vec<f32>,
}

impl Lattice {
    fn new(rng: &mut Rng, w: u32, h: u32, cell: f32) -> Self {
        let cols = (w as f32 / cell) as usize + 2;
        let rows = (h as f32 / cell) as usize + 2;
        let vals = (0..cols * rows).map(|_| rng.unit()).collect();
        Self {
            cell,
            cols,
            rows,
            vals,
        }
    }

    fn at(&self, x: f32, y: f32) -> f32 {
        let (gx, gy) = (x / self.cell, y / self.cell);
        let (ix, iy) = (gx as usize, gy as usize);
        let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
        let (fx, fy) = (smooth(gx - ix as f32), smooth(gy - iy as f32));
        let v = |c: usize, r: usize| self.vals[(r % self.rows) * self.cols + c % self.cols];
        let top = v(ix, iy) + (v(ix + 1, iy) - v(ix, iy)) * fx;
        let bottom = v(ix, iy + 1) + (v(ix + 1, iy + 1) - v(ix, iy + 1)) * fx;
        top + (bottom - top) * fy
    }
}

/// Fractal sum of lattices, each twice as fine and half as strong; in [0, 1].
struct Fbm(Vec<Lattice>);

impl Fbm {
    fn new(rng: &mut Rng, w: u32, h: u32, coarsest: f32, octaves: usize) -> Self {
        Self(
            (0..octaves)
                .map(|i| Lattice::new(rng, w, h, (coarsest / (1 << i) as f32).max(2.0)))
                .collect(),
        )
    }

    fn at(&self, x: f32, y: f32) -> f32 {
        let (mut sum, mut norm, mut amp) = (0.0, 0.0, 1.0);
        for l in &self.0 {
            sum += l.at(x, y) * amp;
            norm += amp;
            amp *= 0.5;
        }
        sum / norm
    }
}

type Rgb = [f32; 3];

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    let t = t.clamp(0.0, 1.0);
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn scale(c: Rgb, k: f32) -> Rgb {
    [c[0] * k, c[1] * k, c[2] * k]
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

fn draw(w: u32, h: u32) -> RgbImage {
    let mut rng = Rng(0x0B0E_47B3_2024_0001);
    let (wf, hf) = (w as f32, h as f32);
    let clouds = Fbm::new(&mut rng, w, h, 600.0, 7);
    let ridge = Fbm::new(&mut rng, w, 1, 700.0, 8);
    let rock = Fbm::new(&mut rng, w, h, 250.0, 7);
    let field = Fbm::new(&mut rng, w, h, 400.0, 8);
    let shore = Fbm::new(&mut rng, w, 1, 300.0, 5);
    // Grass blades, gravel, leaves: the fine detail that makes a real
    // photo's JPEG several times larger than a smooth rendering's.
    let fine = Fbm::new(&mut rng, w, h, 24.0, 4);
    let sun = (0.78 * wf, 0.16 * hf, 0.035 * wf);

    let mut img = RgbImage::new(w, h);
    for x in 0..w {
        let xf = x as f32;
        let peak = hf * (0.22 + 0.22 * ridge.at(xf, 0.0));
        let horizon = hf * (0.52 + 0.04 * shore.at(xf, 0.0));
        for y in 0..h {
            let yf = y as f32;
            let c = if yf < peak {
                let sky = mix([62.0, 110.0, 190.0], [200.0, 215.0, 232.0], yf / peak);
                let cover = smoothstep(0.52, 0.72, clouds.at(xf, yf * 2.2));
                let shade = 0.78 + 0.25 * clouds.at(xf + 991.0, yf * 2.2);
                let mut c = mix(sky, scale([245.0, 245.0, 248.0], shade), cover);
                let d = ((xf - sun.0).powi(2) + (yf - sun.1).powi(2)).sqrt();
                let glow = (-(d - sun.2).max(0.0) / (0.12 * wf)).exp();
                c = mix(c, [255.0, 244.0, 214.0], glow * 0.6);
                if d < sun.2 {
                    c = [255.0, 252.0, 238.0];
                }
                c
            } else if yf < horizon {
                // Haze: farther (higher) rock is paler and bluer.
                let depth = (yf - peak) / (horizon - peak).max(1.0);
                let r = rock.at(xf, yf);
                let base = mix([150.0, 160.0, 185.0], [70.0, 78.0, 88.0], depth);
                let snow = smoothstep(0.6, 0.7, r) * (1.0 - depth);
                let grit = (0.85 + 0.3 * fine.at(xf, yf) * depth) * (0.9 + 0.2 * speckle(x, y));
                mix(
                    scale(base, (0.75 + 0.5 * r) * grit),
                    [235.0, 238.0, 245.0],
                    snow,
                )
            } else {
                let near = (yf - horizon) / (hf - horizon);
                let f = field.at(xf, yf * (1.5 - near));
                let grass = mix([120.0, 150.0, 80.0], [45.0, 85.0, 30.0], near);
                let soil = [125.0, 100.0, 65.0];
                let c = mix(grass, soil, smoothstep(0.55, 0.65, f));
                let blades =
                    (0.7 + 0.6 * fine.at(xf, yf * (0.5 + near))) * (0.8 + 0.4 * speckle(x, y));
                scale(c, (0.7 + 0.6 * field.at(xf + 523.0, yf)) * blades)
            };
            img.put_pixel(x, y, px(c));
        }
    }

    // A lake mirroring the sky, with ripples.
    let (lx, ly, rx, ry) = (0.32 * wf, 0.74 * hf, 0.2 * wf, 0.06 * hf);
    for y in (ly - ry) as u32..(ly + ry) as u32 {
        for x in (lx - rx) as u32..(lx + rx) as u32 {
            let (dx, dy) = ((x as f32 - lx) / rx, (y as f32 - ly) / ry);
            if dx * dx + dy * dy < 1.0 {
                let ripple = 0.85 + 0.3 * clouds.at(x as f32 * 0.5, y as f32 * 6.0);
                img.put_pixel(x, y, px(scale([95.0, 135.0, 185.0], ripple)));
            }
        }
    }

    // Trees: dark cones on trunks, smaller towards the horizon.
    for _ in 0..40 {
        let base_y = hf * (0.56 + 0.42 * rng.unit());
        let size = 40.0 + 260.0 * (base_y / hf - 0.55) * 2.0;
        let cx = wf * rng.unit();
        let green = [25.0 + 30.0 * rng.unit(), 60.0 + 40.0 * rng.unit(), 25.0];
        let top = base_y - size * 1.8;
        for y in top.max(0.0) as u32..(base_y as u32).min(h) {
            let t = (y as f32 - top) / (base_y - top);
            let half = size * 0.45 * t;
            for x in (cx - half).max(0.0) as u32..((cx + half) as u32).min(w) {
                let light = (0.55 + 0.6 * fine.at(x as f32 * 1.5, y as f32 * 1.5))
                    * (0.8 + 0.4 * speckle(x, y));
                img.put_pixel(x, y, px(scale(green, light)));
            }
        }
        let trunk = size * 0.08;
        for y in base_y as u32..((base_y + size * 0.3) as u32).min(h) {
            for x in (cx - trunk).max(0.0) as u32..((cx + trunk) as u32).min(w) {
                img.put_pixel(x, y, px([70.0, 50.0, 35.0]));
            }
        }
    }

    // A house: hard edges and flat colour, which JPEG handles differently
    // from texture.
    let (hx, hy, hw, hh) = (0.62 * wf, 0.66 * hf, 0.09 * wf, 0.08 * hf);
    for y in hy as u32..(hy + hh) as u32 {
        for x in hx as u32..(hx + hw) as u32 {
            let window = ((x as f32 - hx) / hw * 5.0).fract() > 0.6
                && ((y as f32 - hy) / hh * 3.0).fract() > 0.5;
            let c = if window {
                [40.0, 45.0, 60.0]
            } else {
                [200.0, 190.0, 170.0]
            };
            img.put_pixel(x, y, px(c));
        }
    }
    for y in (hy - hh * 0.6) as u32..hy as u32 {
        let t = (y as f32 - (hy - hh * 0.6)) / (hh * 0.6);
        let half = hw * 0.6 * t;
        let cx = hx + hw / 2.0;
        for x in (cx - half) as u32..(cx + half) as u32 {
            img.put_pixel(x, y, px([150.0, 55.0, 45.0]));
        }
    }

    // Sensor grain, a little stronger in the shadows as in real photos.
    for p in img.pixels_mut() {
        let luma = (p.0[0] as f32 + p.0[1] as f32 + p.0[2] as f32) / 765.0;
        let amp = 7.0 - 3.0 * luma;
        let n = (rng.unit() + rng.unit() + rng.unit() - 1.5) * amp;
        for ch in &mut p.0 {
            let chroma = (rng.unit() - 0.5) * amp * 0.3;
            *ch = (*ch as f32 + n + chroma).round().clamp(0.0, 255.0) as u8;
        }
    }
    img
}

fn px(c: Rgb) -> image::Rgb<u8> {
    image::Rgb(c.map(|v| v.round().clamp(0.0, 255.0) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_every_time() {
        let a = draw(300, 200);
        let b = draw(300, 200);
        assert_eq!(a.as_raw(), b.as_raw());
    }
}
