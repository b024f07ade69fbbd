//! Sizes and durations as people write them (`512MiB`, `30s`, `1h30m`),
//! read from flags and shown the same way.
//!
//! Sizes are binary, as Docker reads them: `K`, `M`, `G`, `T` with or
//! without `i` and `B` (`512M` = `512Mi` = `512MiB`). A bare number keeps
//! the unit the flag always had (MiB for memory, seconds for timeouts), so
//! scripts written before units still work.

/// Bytes in a unit of size.
fn size_unit(unit: &str) -> Option<u64> {
    let u = unit.to_ascii_lowercase();
    let u = u.strip_suffix('b').unwrap_or(&u);
    let u = u.strip_suffix('i').unwrap_or(u);
    Some(match u {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    })
}

/// Splits `1.5GiB` into the number and the unit.
fn split_number(s: &str) -> (&str, &str) {
    let at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (s[..at].trim(), s[at..].trim())
}

/// A size in bytes; a bare number is taken in `bare` bytes.
pub fn parse_size(s: &str, bare: u64) -> Result<u64, String> {
    let s = s.trim();
    let (number, unit) = split_number(s);
    let scale = if unit.is_empty() {
        bare
    } else {
        size_unit(unit).ok_or_else(|| {
            format!("{s:?}: unknown unit {unit:?}; use B, KiB, MiB, GiB or TiB (e.g. 512MiB)")
        })?
    };
    let bytes = match number.split_once('.') {
        None => number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale)),
        Some((whole, frac)) if !frac.is_empty() && frac.len() <= 6 => {
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| format!("{s:?} is not a size"))?
            };
            let digits = u32::try_from(frac.len()).unwrap_or(6);
            let frac: u64 = frac.parse().map_err(|_| format!("{s:?} is not a size"))?;
            let exact = u128::from(frac) * u128::from(scale);
            let div = 10u128.pow(digits);
            if !exact.is_multiple_of(div) {
                return Err(format!("{s:?} is not a whole number of bytes"));
            }
            whole
                .checked_mul(scale)
                .and_then(|w| w.checked_add(u64::try_from(exact / div).ok()?))
        }
        Some(_) => None,
    };
    bytes.ok_or_else(|| format!("{s:?} is not a size (e.g. 512MiB, 1.5GiB)"))
}

/// A memory setting in whole MiB (`--memory 512MiB`, `1GiB`, or `512`).
pub fn parse_mib(s: &str) -> Result<u32, String> {
    const MIB: u64 = 1 << 20;
    let bytes = parse_size(s, MIB)?;
    if !bytes.is_multiple_of(MIB) {
        return Err(format!("{s:?}: memory is set in whole MiB"));
    }
    u32::try_from(bytes / MIB).map_err(|_| format!("{s:?} is too large"))
}

/// A duration in seconds: `30s`, `5m`, `1h30m`, `2d`, or a bare number of
/// seconds.
pub fn parse_secs(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("a duration is needed (e.g. 30s, 5m, 1h30m)".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| format!("{s:?} is too large"));
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let (n, unit) = (&rest[..digits], rest[digits..digits + unit_len].trim());
        let n: u64 = n
            .parse()
            .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 5m, 1h30m)"))?;
        let scale = match unit {
            "s" | "sec" | "secs" => 1,
            "m" | "min" | "mins" => 60,
            "h" | "hr" | "hrs" => 3600,
            "d" => 86_400,
            "ms" => return Err(format!("{s:?}: this is set in whole seconds")),
            _ => {
                return Err(format!(
                    "{s:?}: unknown unit {unit:?}; use s, m, h or d (e.g. 30s, 1h30m)"
                ));
            }
        };
        total = n
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long"))?;
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

/// A duration setting that fits the contract's seconds (`u32`).
pub fn parse_secs_u32(s: &str) -> Result<u32, String> {
    u32::try_from(parse_secs(s)?).map_err(|_| format!("{s:?} is too long"))
}

/// Seconds as they are written: `30s`, `5m`, `1h30m`, `2d`.
pub fn fmt_secs(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

/// Milliseconds, as precise as useful: `350ms`, `1.25s`, `2m5s`.
pub fn fmt_ms(ms: i64) -> String {
    match ms {
        ..0 => "-".into(),
        0..1000 => format!("{ms}ms"),
        1000..60_000 => {
            let s = format!("{:.2}", ms as f64 / 1000.0);
            format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
        }
        _ => fmt_secs(u64::try_from((ms + 500) / 1000).unwrap_or(0)),
    }
}

/// Bytes in binary units: `512B`, `1.5KiB`, `32MiB`, `1GiB`.
pub fn fmt_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut whole = bytes;
    while whole >= 1024 && unit < UNITS.len() - 1 {
        whole /= 1024;
        unit += 1;
    }
    let scale = 1u64 << (10 * unit);
    if bytes.is_multiple_of(scale) {
        return format!("{}{}", bytes / scale, UNITS[unit]);
    }
    let v = format!("{:.1}", bytes as f64 / scale as f64);
    format!("{}{}", v.trim_end_matches(".0"), UNITS[unit])
}

/// A memory setting in MiB, shown as it is written: `512MiB`, `2GiB`.
pub fn fmt_mib(mib: u32) -> String {
    fmt_bytes(u64::from(mib) << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        const MIB: u64 = 1 << 20;
        for (s, bytes) in [
            ("512MiB", 512 * MIB),
            ("512Mi", 512 * MIB),
            ("512M", 512 * MIB),
            ("512mb", 512 * MIB),
            ("1GiB", 1024 * MIB),
            ("1.5G", 1536 * MIB),
            ("64", 64 * MIB),
            ("2048KiB", 2 * MIB),
            (" 3 MiB ", 3 * MIB),
        ] {
            assert_eq!(parse_size(s, MIB), Ok(bytes), "{s}");
        }
        for bad in [
            "",
            "MiB",
            "12XB",
            "1.5.5M",
            "-1M",
            "0.3B",
            "99999999999999999999G",
        ] {
            assert!(parse_size(bad, MIB).is_err(), "{bad}");
        }
        assert_eq!(parse_mib("1GiB"), Ok(1024));
        assert_eq!(parse_mib("32"), Ok(32));
        assert!(parse_mib("1500KiB").is_err(), "not whole MiB");
    }

    #[test]
    fn durations() {
        for (s, secs) in [
            ("30s", 30),
            ("30", 30),
            ("5m", 300),
            ("1h30m", 5400),
            ("1m30s", 90),
            ("2d", 172_800),
            ("1h 5s", 3605),
            ("10min", 600),
        ] {
            assert_eq!(parse_secs(s), Ok(secs), "{s}");
        }
        for bad in ["", "s", "5x", "500ms", "1.5h", "-3s"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shown_as_written() {
        for secs in [0, 9, 30, 60, 90, 300, 3600, 5400, 86_400, 90_061] {
            assert_eq!(parse_secs(&fmt_secs(secs)), Ok(secs), "{secs}");
        }
        assert_eq!(fmt_secs(5400), "1h30m");
        assert_eq!(fmt_ms(350), "350ms");
        assert_eq!(fmt_ms(1250), "1.25s");
        assert_eq!(fmt_ms(2000), "2s");
        assert_eq!(fmt_ms(125_000), "2m5s");
        for mib in [1, 32, 512, 1024, 1536, 4096] {
            assert_eq!(parse_mib(&fmt_mib(mib)), Ok(mib), "{mib}");
        }
        assert_eq!(fmt_mib(512), "512MiB");
        assert_eq!(fmt_mib(2048), "2GiB");
        assert_eq!(fmt_bytes(1536), "1.5KiB");
        assert_eq!(fmt_bytes(0), "0B");
    }
}
