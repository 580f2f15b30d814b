//! Which backups a retention policy keeps: restic's `forget` rules (`--keep-last`,
//! `--keep-daily`, `--keep-weekly`, `--keep-monthly`), on the backups of one deployment.
//!
//! The backups are taken newest first. `--keep-last N` keeps the N newest. Each calendar rule
//! keeps the newest backup of each of the last N days (weeks, months) that have a backup:
//! a backup is kept when its day differs from that of the last backup the rule kept, until N
//! are kept. When a rule still has some left at the oldest backup, it keeps that one too
//! (restic's "oldest" keep: the history reaches as far back as the backups allow). A backup
//! kept by any rule stays. Days are UTC days (a backup's name is in UTC); weeks are ISO weeks,
//! Monday to Sunday.

use serde::Serialize;

use crate::timestamp::Utc;

/// How many of each a prune keeps; 0 is "this rule keeps none".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    pub last: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

impl Policy {
    /// A policy that keeps nothing would remove every backup: refused by the caller.
    pub(crate) fn is_empty(&self) -> bool {
        self.last == 0 && self.daily == 0 && self.weekly == 0 && self.monthly == 0
    }
}

/// A rule that keeps a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Rule {
    Last,
    Daily,
    Weekly,
    Monthly,
}

/// Why one backup is kept: by `rule`, and whether only as the oldest one the rule had room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Reason {
    pub rule: Rule,
    pub oldest: bool,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rule = match self.rule {
            Rule::Last => "last",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
        };
        match self.oldest {
            true => write!(f, "oldest {rule}"),
            false => f.write_str(rule),
        }
    }
}

/// The period a backup falls in, for one rule: equal for two backups of the same period.
fn period(rule: Rule, at: &Utc, position: usize) -> i64 {
    match rule {
        // Every backup is a period of its own.
        Rule::Last => position as i64,
        Rule::Daily => at.year * 10_000 + i64::from(at.month * 100 + at.day),
        Rule::Weekly => {
            let (year, week) = at.iso_week();
            year * 100 + i64::from(week)
        }
        Rule::Monthly => at.year * 100 + i64::from(at.month),
    }
}

/// For each backup of `newest_first` (one deployment's, sorted newest first), the reasons it
/// is kept; none: it goes.
pub(crate) fn apply(policy: &Policy, newest_first: &[Utc]) -> Vec<Vec<Reason>> {
    struct Left {
        rule: Rule,
        count: u32,
        last_period: Option<i64>,
    }
    let mut rules: Vec<Left> = [
        (Rule::Last, policy.last),
        (Rule::Daily, policy.daily),
        (Rule::Weekly, policy.weekly),
        (Rule::Monthly, policy.monthly),
    ]
    .into_iter()
    .map(|(rule, count)| Left {
        rule,
        count,
        last_period: None,
    })
    .collect();
    let oldest = newest_first.len().saturating_sub(1);
    newest_first
        .iter()
        .enumerate()
        .map(|(position, at)| {
            let mut reasons = Vec::new();
            for left in rules.iter_mut().filter(|l| l.count > 0) {
                let p = period(left.rule, at, position);
                let new_period = left.last_period != Some(p);
                if new_period || position == oldest {
                    left.last_period = Some(p);
                    left.count -= 1;
                    reasons.push(Reason {
                        rule: left.rule,
                        oldest: !new_period,
                    });
                }
            }
            reasons
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(stamps: &[&str]) -> Vec<Utc> {
        stamps
            .iter()
            .map(|s| Utc::parse_compact(s).unwrap())
            .collect()
    }

    /// The kept backups as `index: reasons`.
    fn kept(policy: Policy, stamps: &[&str]) -> Vec<String> {
        apply(&policy, &times(stamps))
            .into_iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(i, r)| {
                let r: Vec<String> = r.iter().map(Reason::to_string).collect();
                format!("{i}: {}", r.join(", "))
            })
            .collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let p = Policy {
            last: 2,
            ..Policy::default()
        };
        let t = ["20261126T100000Z", "20261126T090000Z", "20261125T100000Z"];
        assert_eq!(kept(p, &t), ["0: last", "1: last"]);
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_day_that_has_one() {
        let p = Policy {
            daily: 3,
            ..Policy::default()
        };
        // Two on the 26th, none on the 24th: the 26th's newest, the 25th's, the 23rd's.
        let t = [
            "20261126T230000Z",
            "20261126T010000Z",
            "20261125T120000Z",
            "20261123T120000Z",
            "20261122T120000Z",
        ];
        assert_eq!(kept(p, &t), ["0: daily", "2: daily", "3: daily"]);
    }

    #[test]
    fn a_rule_with_room_left_keeps_the_oldest_too() {
        let p = Policy {
            daily: 5,
            ..Policy::default()
        };
        let t = ["20261126T230000Z", "20261126T010000Z", "20261126T000000Z"];
        assert_eq!(kept(p, &t), ["0: daily", "2: oldest daily"]);
    }

    #[test]
    fn weekly_and_monthly_follow_iso_weeks_and_months_and_rules_add_up() {
        let p = Policy {
            last: 1,
            weekly: 2,
            monthly: 2,
            ..Policy::default()
        };
        let t = [
            "20261201T100000Z", // Tue, week 49, December
            "20261130T100000Z", // Mon, week 49, November
            "20261129T100000Z", // Sun, week 48
            "20261123T100000Z", // Mon, week 48
            "20261031T100000Z", // October
        ];
        assert_eq!(
            kept(p, &t),
            ["0: last, weekly, monthly", "1: monthly", "2: weekly"]
        );
    }

    #[test]
    fn the_documented_example_twelve_sundays_keep_daily_4() {
        // restic's docs: a backup every Sunday for 12 weeks; --keep-daily 4 keeps the last 4.
        let sundays: Vec<String> = (0..12)
            .map(|w| Utc::from_unix(1_573_988_400 - w * 7 * 86_400).compact())
            .collect();
        let t: Vec<&str> = sundays.iter().map(String::as_str).collect();
        let p = Policy {
            daily: 4,
            ..Policy::default()
        };
        assert_eq!(
            kept(p, &t),
            ["0: daily", "1: daily", "2: daily", "3: daily"]
        );
    }
}
