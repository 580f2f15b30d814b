//! `backups list|verify|prune`: the catalogue of a place that holds backups, shown to the
//! operator (a table, or one JSON document: docs/catalogue.md) and acted on.

use std::io::Write;

use serde::Serialize;

use super::context::Context;
use crate::catalogue::policy::{Policy, Reason};
use crate::catalogue::prune::{self, Decision};
use crate::catalogue::{self, Backup, State};
use crate::cli::{BackupsCommand, PruneArgs};
use crate::console::human_bytes;
use crate::error::AppError;
use crate::printable::printable;
use crate::storage::{Location, Storage, StorageError};
use crate::timestamp::Utc;

/// What `backups` can fail on before it has anything to show.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "{0} is not a directory: give the directory that holds the <deployment>_<timestamp> backups, or s3://BUCKET/PREFIX"
    )]
    NotADirectory(String),
    #[error(
        "{dest} holds more than {at_most} objects, and a prune weighs every backup of a deployment: it does not run on a partial listing; prune a place (or an s3:// prefix) that holds fewer"
    )]
    TooMany { dest: String, at_most: usize },
}

/// The largest characters of a name shown on a line.
const SHOWN_AT_MOST: usize = 300;

pub fn run(ctx: &Context, command: &BackupsCommand) -> Result<i32, AppError> {
    match command {
        BackupsCommand::List { dest, json } => list(dest, *json),
        BackupsCommand::Prune(args) => prune(args),
        BackupsCommand::Verify { artifact, identity } => {
            super::backups_verify::verify(ctx, artifact, identity.as_deref())
        }
    }
}

/// The storage `dest` names; a local one must be a directory (a listing of one that is not
/// there would show nothing, as if it held no backups).
fn open(dest: &std::ffi::OsStr) -> Result<(Location, Box<dyn Storage>), AppError> {
    let (location, storage) = super::artifact_path::open(std::path::Path::new(dest))?;
    if let Location::Local(path) = &location
        && !path.is_dir()
    {
        return Err(CatalogueError::NotADirectory(printable(
            &path.to_string_lossy(),
            SHOWN_AT_MOST,
        ))
        .into());
    }
    Ok((location, storage))
}

/// How the place is named on the operator's screen.
fn place(location: &Location) -> String {
    match location {
        Location::Local(path) => printable(&path.to_string_lossy(), SHOWN_AT_MOST),
        Location::S3 { bucket, prefix } => match prefix.is_empty() {
            true => format!("s3://{bucket}"),
            false => format!("s3://{bucket}/{}", printable(prefix, SHOWN_AT_MOST)),
        },
    }
}

/// `backups list --json`'s document: docs/catalogue.md says what each field means.
#[derive(Serialize)]
struct Listing {
    format: u32,
    location: String,
    truncated: bool,
    others: usize,
    backups: Vec<Listed>,
}

#[derive(Serialize)]
struct Listed {
    name: String,
    deployment: String,
    started: String,
    state: &'static str,
    unreadable: Option<String>,
    start_time: Option<String>,
    finish_time: Option<String>,
    size: u64,
    objects: usize,
    compression: Option<String>,
    compressed_on: Option<String>,
    encryption: Option<String>,
    recipients: Vec<String>,
    /// An incomplete backup's run's last heartbeat (`storage::claim`), RFC 3339.
    last_heartbeat: Option<String>,
    /// Whether a metadata was read: without one, how it is stored is not known.
    #[serde(skip)]
    summarised: bool,
}

impl Listed {
    fn of(b: &Backup) -> Listed {
        let activity = b.summary.as_ref().map(|s| &s.backup_activity);
        let codecs = b.summary.as_ref().and_then(|s| s.bbr_agent.clone());
        let codecs = codecs.unwrap_or_default();
        Listed {
            name: b.name.clone(),
            deployment: b.deployment.clone(),
            started: b.started.iso(),
            state: match b.state {
                State::Complete => "complete",
                State::Incomplete => "incomplete",
                State::Unreadable(_) => "unreadable",
            },
            unreadable: match &b.state {
                State::Unreadable(why) => Some(why.clone()),
                _ => None,
            },
            start_time: activity.and_then(|a| a.start_time.clone()),
            finish_time: activity.and_then(|a| a.finish_time.clone()),
            size: b.size,
            objects: b.objects,
            compression: codecs.compression,
            compressed_on: codecs.compressed_on,
            encryption: codecs.encryption,
            recipients: codecs.recipients,
            last_heartbeat: b.beats.newest.map(|t| Utc::from_unix(t).iso()),
            summarised: b.summary.is_some(),
        }
    }

    /// `zstd on vm, age`, `plain`, or `-` when there is no metadata to tell.
    fn stored(&self) -> String {
        if !self.summarised {
            return "-".to_string();
        }
        let mut parts = Vec::new();
        if let Some(c) = &self.compression {
            parts.push(match &self.compressed_on {
                Some(on) => format!("{} on {}", printable(c, 32), printable(on, 32)),
                None => printable(c, 32),
            });
        }
        if let Some(e) = &self.encryption {
            parts.push(printable(e, 32));
        }
        match parts.is_empty() {
            true => "plain".to_string(),
            false => parts.join(", "),
        }
    }

    /// `complete`, `incomplete`, `incomplete (last heartbeat ...)`, or `unreadable: why`.
    fn state_line(&self) -> String {
        match (&self.unreadable, &self.last_heartbeat) {
            (Some(why), _) => format!("unreadable: {}", printable(why, SHOWN_AT_MOST)),
            (None, Some(beat)) => format!("{} (last heartbeat {beat})", self.state),
            (None, None) => self.state.to_string(),
        }
    }
}

fn list(dest: &std::ffi::OsStr, json: bool) -> Result<i32, AppError> {
    let (location, storage) = open(dest)?;
    let catalogue = catalogue::scan(storage.as_ref()).map_err(CatalogueError::from)?;
    let listing = Listing {
        format: 1,
        location: place(&location),
        truncated: catalogue.truncated,
        others: catalogue.others,
        backups: catalogue.backups.iter().map(Listed::of).collect(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let json = serde_json::to_string_pretty(&listing).expect("listing serialises");
        writeln!(out, "{json}")?;
    } else {
        print_table(&mut out, &listing, catalogue.is_a_backup)?;
    }
    out.flush()?;
    if listing.truncated {
        eprintln!(
            "warning: {} holds more than {} objects: only the backups among the first {0} are listed",
            listing.location,
            catalogue::LIST_AT_MOST
        );
    }
    Ok(0)
}

fn print_table(out: &mut impl Write, listing: &Listing, is_a_backup: bool) -> std::io::Result<()> {
    if listing.backups.is_empty() {
        return writeln!(
            out,
            "No backups under {}.{}",
            listing.location,
            match is_a_backup {
                true =>
                    " It holds a `metadata` of its own: it is a backup; give the directory that holds it.",
                false => "",
            }
        );
    }
    let rows: Vec<[String; 6]> = listing
        .backups
        .iter()
        .map(|b| {
            [
                printable(&b.name, SHOWN_AT_MOST),
                printable(&b.deployment, SHOWN_AT_MOST),
                b.started.clone(),
                human_bytes(b.size),
                b.stored(),
                b.state_line(),
            ]
        })
        .collect();
    let head = ["BACKUP", "DEPLOYMENT", "STARTED", "SIZE", "STORED", "STATE"];
    let mut widths = head.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: [&str; 6]| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            match i {
                5 => text.push_str(cell),
                _ => text.push_str(&format!("{cell:<w$}  ", w = widths[i])),
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, head)?;
    for row in &rows {
        line(out, row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

fn prune(args: &PruneArgs) -> Result<i32, AppError> {
    let policy = Policy {
        last: args.keep_last.unwrap_or(0),
        daily: args.keep_daily.unwrap_or(0),
        weekly: args.keep_weekly.unwrap_or(0),
        monthly: args.keep_monthly.unwrap_or(0),
    };
    if policy.is_empty() {
        return Err(AppError::Usage(
            "backups prune needs a policy: give at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly with N of 1 or more"
                .to_string(),
        ));
    }
    let (location, storage) = open(&args.dest)?;
    let catalogue = catalogue::scan(storage.as_ref()).map_err(CatalogueError::from)?;
    if catalogue.truncated {
        return Err(CatalogueError::TooMany {
            dest: place(&location),
            at_most: catalogue::LIST_AT_MOST,
        }
        .into());
    }
    let now = Utc::now().to_unix();
    let plan = prune::plan(&catalogue, &policy, now);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if plan.is_empty() {
        writeln!(
            out,
            "No backups under {}: nothing to prune.",
            place(&location)
        )?;
        out.flush()?;
        return Ok(0);
    }
    // What it keeps first, then what it removes: the old incomplete ones before the rest.
    for (backup, decision) in plan.iter().filter(|(_, d)| !d.removes()) {
        writeln!(out, "{}", decision_line(backup, decision, args.dry_run))?;
    }
    let mut removing: Vec<&(&Backup, Decision)> =
        plan.iter().filter(|(_, d)| d.removes()).collect();
    removing.sort_by_key(|(_, d)| !d.removes_incomplete());
    let (mut removed, mut bytes, mut failed) = (0, 0, 0);
    let mut stopped = false;
    for (backup, decision) in removing {
        // A signal stops the prune between two backups (each goes whole or, metadata first,
        // is left incomplete): the exit status then says which signal.
        if crate::interrupt::is_interrupted() {
            stopped = true;
            break;
        }
        writeln!(out, "{}", decision_line(backup, decision, args.dry_run))?;
        if args.dry_run {
            removed += 1;
            bytes += backup.size;
            continue;
        }
        // Each line as it happens: a long removal shows where it is.
        out.flush()?;
        if decision.removes_incomplete() {
            match prune::kept_after_all(storage.as_ref(), backup, Utc::now().to_unix()) {
                Ok(None) => {}
                Ok(Some(why)) => {
                    writeln!(out, "  (not removed: {why})")?;
                    continue;
                }
                Err(e) => {
                    failed += 1;
                    eprintln!(
                        "error: cannot look at {} again: {e}",
                        printable(&backup.name, SHOWN_AT_MOST)
                    );
                    continue;
                }
            }
        }
        match prune::remove(storage.as_ref(), backup) {
            Ok(n) => {
                removed += 1;
                bytes += n;
            }
            Err(e) => {
                failed += 1;
                let whole = match e {
                    prune::RemoveError::Left { .. } => " whole",
                    prune::RemoveError::Metadata(_) => "",
                };
                eprintln!(
                    "error: cannot remove {}{whole}: {e}",
                    printable(&backup.name, SHOWN_AT_MOST)
                );
            }
        }
    }
    if stopped {
        writeln!(
            out,
            "Interrupted: removed {removed} ({}); the rest are kept.",
            human_bytes(bytes)
        )?;
        out.flush()?;
        return Ok(1);
    }
    let kept = plan.len() - removed - failed;
    match args.dry_run {
        true => writeln!(
            out,
            "Dry run: would keep {kept} and remove {removed} ({}); nothing was removed.",
            human_bytes(bytes)
        )?,
        false => writeln!(
            out,
            "Kept {kept}, removed {removed} ({}){}.",
            human_bytes(bytes),
            match failed {
                0 => String::new(),
                n => format!(", {n} could not be removed (above)"),
            }
        )?,
    }
    out.flush()?;
    Ok(i32::from(failed > 0))
}

/// `keep cf_20261126T100203Z (last, daily)` and the like.
fn decision_line(backup: &Backup, decision: &Decision, dry_run: bool) -> String {
    let name = printable(&backup.name, SHOWN_AT_MOST);
    let remove = match dry_run {
        true => "would remove",
        false => "remove",
    };
    let started = backup.started.iso();
    match decision {
        Decision::Keep(reasons) => {
            let reasons: Vec<String> = reasons.iter().map(Reason::to_string).collect();
            format!("keep {name} ({})", reasons.join(", "))
        }
        Decision::KeepNewest => {
            format!("keep {name} (the newest complete backup of its deployment)")
        }
        Decision::Remove => format!("{remove} {name} (kept by no rule)"),
        Decision::RemoveIncomplete => format!(
            "{remove} {name} (incomplete: started {started}, more than a day ago, and never finished)"
        ),
        Decision::RemoveStopped { beat } => format!(
            "{remove} {name} (incomplete: started {started}, its run's last heartbeat was at {}, more than two hours ago: the run stopped)",
            Utc::from_unix(*beat).iso()
        ),
        Decision::LeaveRunning => format!(
            "leave {name} (incomplete, started {started}, less than a day ago: it may still be running)"
        ),
        Decision::LeaveCrowded => format!(
            "leave {name} (incomplete, started {started}: it has more claims than a prune reads ({}), so a run may still be going; remove it by hand once none is)",
            crate::storage::claim::READ_AT_MOST
        ),
        Decision::LeaveBeating { beat } => format!(
            "leave {name} (incomplete, started {started}: its run is still going, last heartbeat at {})",
            Utc::from_unix(*beat).iso()
        ),
        Decision::LeaveUnreadable(why) => format!(
            "leave {name} (unreadable: {}; look at it by hand)",
            printable(why, SHOWN_AT_MOST)
        ),
    }
}
