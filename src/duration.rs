//! Durations as operators write them on the command line: `500ms`, `30s`, `5m`, `2h`.

use std::time::Duration;

/// Parses `<number><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        format!("invalid duration '{text}': write a whole number and a unit, like 30s, 5m or 2h")
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

/// A duration for humans: `850ms`, `12.3s`, `4m05s`.
pub fn format(d: Duration) -> String {
    let millis = d.as_millis();
    if millis < 1_000 {
        format!("{millis}ms")
    } else if millis < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// A limit as an operator would write it: `500ms`, `2s`, `60s`, `5m`, else as [`format`].
pub fn format_limit(d: Duration) -> String {
    let millis = d.as_millis();
    if millis.is_multiple_of(60_000) && millis >= 600_000 {
        format!("{}m", millis / 60_000)
    } else if millis.is_multiple_of(1_000) && millis < 600_000 {
        format!("{}s", millis / 1_000)
    } else if millis < 1_000 {
        format!("{millis}ms")
    } else {
        format(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_rejects_the_rest() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "30", "s", "1.5s", "-3s", "3 s", "3d"] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn formats_for_humans() {
        assert_eq!(format(Duration::from_millis(850)), "850ms");
        assert_eq!(format(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(format(Duration::from_secs(245)), "4m05s");
    }

    #[test]
    fn formats_limits_as_written() {
        assert_eq!(format_limit(Duration::from_millis(500)), "500ms");
        assert_eq!(format_limit(Duration::from_secs(2)), "2s");
        assert_eq!(format_limit(Duration::from_secs(60)), "60s");
        assert_eq!(format_limit(Duration::from_secs(1200)), "20m");
        assert_eq!(format_limit(Duration::from_millis(1500)), "1.5s");
    }
}
