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
}
