//! The name of a backup's directory, `<deployment>_<YYYYMMDDTHHMMSSZ>`, read back into the
//! deployment and the moment the backup started (BBR names it so, in UTC).

use crate::artifact::plain_name;
use crate::timestamp::Utc;

/// What a backup's directory name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackupName {
    pub deployment: String,
    pub started: Utc,
}

/// `name` read as `<deployment>_<timestamp>`, or `None` when it is not one: no `_`, a
/// timestamp not in the calendar, or a deployment that could not be one file name.
pub(crate) fn parse(name: &str) -> Option<BackupName> {
    let (deployment, stamp) = name.rsplit_once('_')?;
    let started = Utc::parse_compact(stamp)?;
    plain_name::check(deployment, plain_name::NAME_MAX).ok()?;
    Some(BackupName {
        deployment: deployment.to_string(),
        started,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_underscore_splits_the_deployment_from_the_time() {
        let n = parse("cf_db_20261126T100203Z").unwrap();
        assert_eq!(n.deployment, "cf_db");
        assert_eq!(n.started.compact(), "20261126T100203Z");
        for not_a_backup in [
            "cf",
            "cf_",
            "_20261126T100203Z",
            "cf_20261126T100203",
            "cf_20261131T100203Z",
            "a\u{1b}b_20261126T100203Z",
            "lost+found",
        ] {
            assert_eq!(parse(not_a_backup), None, "{not_a_backup:?}");
        }
    }
}
