//! How pgward writes sizes, rates and counts for people — one way everywhere: binary units
//! (`12 B`, `1.5 KiB`, `340.0 MiB`, `1.2 GiB`, as PostgreSQL's own `pg_size_pretty` family
//! and the segment size "16 MiB" read), one decimal, and counts with the right plural
//! ("1 segment", "3 segments"). JSON output never goes through here: it carries plain numbers.

/// `12 B`, `1.5 KiB`, `340.0 MiB`, `1.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `bytes` per `seconds` as `85.3 MiB/s` (a zero or negative duration counts as 1 ms).
pub fn rate(bytes: u64, seconds: f64) -> String {
    let per_second = bytes as f64 / seconds.max(0.001);
    format!("{}/s", self::bytes(per_second.round() as u64))
}

/// `1 segment`, `0 segments`, `3 directories`.
pub fn count(n: u64, singular: &str, plural: &str) -> String {
    if n == 1 {
        format!("1 {singular}")
    } else {
        format!("{n} {plural}")
    }
}

/// A span of time in the largest unit that keeps it readable, rounded down: `45 s`,
/// `12 min`, `26 h`, `3 d` (hours up to 48, so "26 h old" reads as it is said).
pub fn span(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// Reads a size people type: `1048576`, `512KiB`, `64 MiB`, `2GiB`, `1TiB` (binary units, as
/// [`bytes`] writes them; `K`/`M`/`G`/`T` mean the same).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 1048576, 512MiB, 2GiB)"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        other => {
            return Err(format!(
                "`{other}` is not a size unit (B, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_rates_and_counts() {
        for (n, want) in [
            (0, "0 B"),
            (12, "12 B"),
            (1023, "1023 B"),
            (1536, "1.5 KiB"),
            (16 << 20, "16.0 MiB"),
            (3 << 30, "3.0 GiB"),
        ] {
            assert_eq!(bytes(n), want, "{n}");
        }
        assert_eq!(rate(500 << 20, 2.0), "250.0 MiB/s");
        assert_eq!(rate(1 << 20, 0.0), "1000.0 MiB/s");
        assert_eq!(count(1, "segment", "segments"), "1 segment");
        assert_eq!(count(0, "segment", "segments"), "0 segments");
        assert_eq!(count(7, "directory", "directories"), "7 directories");
    }

    #[test]
    fn spans_read_as_they_are_said() {
        for (secs, want) in [
            (-3.0, "0 s"),
            (45.9, "45 s"),
            (119.0, "119 s"),
            (120.0, "2 min"),
            (3599.0, "59 min"),
            (7200.0, "2 h"),
            (26.0 * 3600.0, "26 h"),
            (172_800.0, "2 d"),
            (10.0 * 86_400.0, "10 d"),
        ] {
            assert_eq!(span(secs), want, "{secs}");
        }
    }

    #[test]
    fn sizes_are_read_back() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert!(parse_bytes("12 MB").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }
}
