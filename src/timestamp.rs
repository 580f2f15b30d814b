//! UTC timestamps in the two layouts BBR artifacts use: `20261126T100203Z` in directory names
//! and `2026/11/26 10:02:03 UTC` in the metadata's `backup_activity`.

use std::time::{SystemTime, UNIX_EPOCH};

/// A moment, to the second, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Utc {
    pub fn now() -> Utc {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Utc::from_unix(secs)
    }

    pub fn from_unix(secs: i64) -> Utc {
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
        // Civil-from-days, Howard Hinnant's algorithm (proleptic Gregorian calendar).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Utc {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }

    /// `2026-11-26T10:02:03.123Z`: RFC 3339 with milliseconds, for event streams and logs.
    pub fn rfc3339(at: SystemTime) -> String {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let t = Utc::from_unix(since.as_secs() as i64);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year,
            t.month,
            t.day,
            t.hour,
            t.minute,
            t.second,
            since.subsec_millis()
        )
    }

    /// `10:02:03`: the time of day, to the second, as the run report shows it.
    pub fn clock(at: SystemTime) -> String {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let t = Utc::from_unix(since.as_secs() as i64);
        format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second)
    }

    /// `20261126T100203Z`, as in `<deployment>_<timestamp>` artifact directory names.
    pub fn compact(&self) -> String {
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `2026/11/26 10:02:03 UTC`, as in the metadata's `backup_activity`.
    pub fn activity(&self) -> String {
        format!(
            "{:04}/{:02}/{:02} {:02}:{:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `2026-11-26T10:02:03Z`: RFC 3339 to the second.
    pub fn iso(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// Reads [`Utc::compact`]'s layout back; `None` for anything else, including a date
    /// that is not in the calendar (`20260230T...`).
    pub fn parse_compact(text: &str) -> Option<Utc> {
        let b = text.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let num = |from: usize, to: usize| -> Option<u32> {
            let digits = &text[from..to];
            digits
                .bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| digits.parse().ok())
                .flatten()
        };
        let t = Utc {
            year: i64::from(num(0, 4)?),
            month: num(4, 6)?,
            day: num(6, 8)?,
            hour: num(9, 11)?,
            minute: num(11, 13)?,
            second: num(13, 15)?,
        };
        let in_range = (1..=12).contains(&t.month)
            && (1..=31).contains(&t.day)
            && t.hour < 24
            && t.minute < 60
            && t.second < 60;
        // A day past its month's end comes back as another date.
        (in_range && Utc::from_unix(t.to_unix()) == t).then_some(t)
    }

    /// Seconds since the Unix epoch.
    pub fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
    }

    /// The ISO 8601 week `(year, week)` this day is in: weeks run Monday to Sunday, and week 1
    /// is the one holding the year's first Thursday.
    pub fn iso_week(&self) -> (i64, u32) {
        let days = days_from_civil(self.year, self.month, self.day);
        // 1970-01-01 was a Thursday; Monday is 0 here.
        let weekday = (days + 3).rem_euclid(7);
        let thursday = days - weekday + 3;
        let year = Utc::from_unix(thursday * 86_400).year;
        let week = (thursday - days_from_civil(year, 1, 1)) / 7 + 1;
        (year, week as u32)
    }
}

/// Days since 1970-01-01 of a date of the proleptic Gregorian calendar (Howard Hinnant's
/// days-from-civil).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(Utc::from_unix(0).compact(), "19700101T000000Z");
        // 2026-11-26 10:02:03 UTC
        let t = Utc::from_unix(1_795_687_323);
        assert_eq!(t.compact(), "20261126T100203Z");
        assert_eq!(t.activity(), "2026/11/26 10:02:03 UTC");
        // A leap day, and the last second of a century year.
        assert_eq!(
            Utc::from_unix(951_782_400).activity(),
            "2000/02/29 00:00:00 UTC"
        );
        assert_eq!(Utc::from_unix(4_102_444_799).compact(), "20991231T235959Z");
        let at = UNIX_EPOCH + std::time::Duration::from_millis(1_795_687_323_045);
        assert_eq!(Utc::rfc3339(at), "2026-11-26T10:02:03.045Z");
    }

    #[test]
    fn compact_names_read_back_and_impossible_dates_are_refused() {
        for secs in [0, 951_782_400, 1_795_687_323, 4_102_444_799] {
            let t = Utc::from_unix(secs);
            assert_eq!(Utc::parse_compact(&t.compact()), Some(t));
            assert_eq!(t.to_unix(), secs);
        }
        assert_eq!(
            Utc::parse_compact("20261126T100203Z").unwrap().iso(),
            "2026-11-26T10:02:03Z"
        );
        for bad in [
            "20260230T000000Z",
            "20261126T240000Z",
            "20261326T000000Z",
            "2026112T6100203Z",
            "20261126T100203",
            "+0261126T100203Z",
            "20261126t100203Z",
            "",
        ] {
            assert_eq!(Utc::parse_compact(bad), None, "{bad}");
        }
    }

    #[test]
    fn iso_weeks_follow_the_first_thursday() {
        let week = |s: &str| Utc::parse_compact(s).unwrap().iso_week();
        // 2026-01-01 is a Thursday: week 1 of 2026 starts Monday 2025-12-29.
        assert_eq!(week("20251229T000000Z"), (2026, 1));
        assert_eq!(week("20251228T235959Z"), (2025, 52));
        assert_eq!(week("20260104T120000Z"), (2026, 1));
        assert_eq!(week("20260105T000000Z"), (2026, 2));
        // 2020 had 53 weeks; 2021-01-03 (a Sunday) is still in its last.
        assert_eq!(week("20210103T000000Z"), (2020, 53));
        assert_eq!(week("20210104T000000Z"), (2021, 1));
        assert_eq!(week("20261126T100203Z"), (2026, 48));
    }
}
