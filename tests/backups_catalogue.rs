//! `backups list` and `backups prune` on a directory of backups the test writes by hand:
//! `<deployment>_<YYYYMMDDTHHMMSSZ>` directories with made-up timestamps, a metadata (complete
//! with `finish_time`, or not) and tars, beside entries that are not backups and backups whose
//! metadata cannot be read.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use common::{Run, claim_with_heartbeat, listing, write_file};

/// A BBR metadata for one job's tar; `finish` makes it complete; `codecs` is bbr-agent's key.
fn metadata(finish: bool, codecs: &str) -> String {
    let mut text = String::from(
        "instances:\n- name: db\n  index: \"0\"\n  artifacts:\n  - name: pg\n    checksums:\n      ./dump: 0123456789abcdef\nbackup_activity:\n  start_time: 2026/11/26 10:02:03 UTC\n",
    );
    if finish {
        text.push_str("  finish_time: 2026/11/26 10:05:00 UTC\n");
    }
    text.push_str(codecs);
    text
}

/// A backup `name` under `dest`: its tar of `tar_bytes` bytes, and a metadata unless `None`.
fn backup(dest: &Path, name: &str, tar_bytes: usize, meta: Option<&str>) -> PathBuf {
    let dir = dest.join(name);
    write_file(&dir.join("db-0-pg.tar"), &vec![b't'; tar_bytes]);
    if let Some(meta) = meta {
        write_file(&dir.join("metadata"), meta.as_bytes());
    }
    dir
}

fn complete(dest: &Path, name: &str) -> PathBuf {
    backup(dest, name, 10, Some(&metadata(true, "")))
}

fn incomplete(dest: &Path, name: &str) -> PathBuf {
    backup(dest, name, 10, None)
}

fn agent(dest: &Path, args: &[&str]) -> Run {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.insert(2, dest.display().to_string());
    Run::new(&all, dest)
}

/// `<deployment>_<timestamp>` of `secs_ago` seconds before now, as BBR names it (UTC).
fn name_ago(deployment: &str, secs_ago: u64) -> String {
    format!(
        "{deployment}_{}",
        common::utc_ago(secs_ago, "+%Y%m%dT%H%M%SZ")
    )
}

/// The names of the backups `dest` still holds (directories), sorted.
fn remaining(dest: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn list_shows_each_backup_newest_first_and_skips_what_is_not_one() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    complete(d, "cf_20261126T100203Z");
    write_file(&d.join("cf_20261126T100203Z/report.html"), b"<html/>");
    incomplete(d, "cf_20261127T000000Z");
    backup(
        d,
        "db_20261125T000000Z",
        100,
        Some(&metadata(
            false,
            "bbr_agent:\n  format: 1\n  compression: zstd\n  compressed_on: vm\n  encryption: age\n  recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]\n",
        )),
    );
    // Not backups: a file, a directory of something else, a bad timestamp, a backup-like
    // name without metadata or tar, a name that is not UTF-8.
    write_file(&d.join("notes.txt"), b"hello");
    write_file(&d.join("lost+found/x"), b"x");
    complete(d, "cf_20261131T000000Z");
    write_file(&d.join("cf_20261128T000000Z/readme"), b"r");
    let odd = d.join(std::ffi::OsStr::from_bytes(b"\xff_20261126T100203Z"));
    fs::create_dir(&odd).unwrap();
    fs::write(odd.join("metadata"), metadata(true, "")).unwrap();

    let run = agent(d, &["backups", "list"]);
    run.assert_success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.explain());
    assert!(lines[0].starts_with("BACKUP "), "{}", run.explain());
    assert!(
        lines[1].starts_with("cf_20261127T000000Z "),
        "{}",
        run.explain()
    );
    assert!(lines[1].ends_with(" incomplete"), "{}", run.explain());
    assert!(
        lines[2].starts_with("cf_20261126T100203Z "),
        "{}",
        run.explain()
    );
    assert!(lines[2].contains(" plain "), "{}", run.explain());
    assert!(lines[2].ends_with(" complete"), "{}", run.explain());
    assert!(lines[3].contains("zstd on vm, age"), "{}", run.explain());

    let run = agent(d, &["backups", "list", "--json"]);
    run.assert_success();
    let doc = run.json();
    assert_eq!(doc["format"], 1);
    assert_eq!(doc["truncated"], false);
    // notes.txt, lost+found, the bad timestamp, the one without metadata or tar (the name
    // that is not UTF-8 is not listed at all).
    assert_eq!(doc["others"], 4, "{}", run.explain());
    let backups = doc["backups"].as_array().unwrap();
    let names: Vec<&str> = backups
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "cf_20261127T000000Z",
            "cf_20261126T100203Z",
            "db_20261125T000000Z"
        ]
    );
    let cf = &backups[1];
    assert_eq!(cf["deployment"], "cf");
    assert_eq!(cf["started"], "2026-11-26T10:02:03Z");
    assert_eq!(cf["state"], "complete");
    assert_eq!(cf["finish_time"], "2026/11/26 10:05:00 UTC");
    let meta_len = metadata(true, "").len() as u64;
    assert_eq!(cf["size"], 10 + 7 + meta_len);
    assert_eq!(cf["objects"], 3);
    assert_eq!(cf["compression"], serde_json::Value::Null);
    assert_eq!(backups[0]["state"], "incomplete");
    assert_eq!(backups[0]["start_time"], serde_json::Value::Null);
    let db = &backups[2];
    assert_eq!(db["state"], "incomplete");
    assert_eq!(db["compression"], "zstd");
    assert_eq!(db["compressed_on"], "vm");
    assert_eq!(db["encryption"], "age");
    assert_eq!(
        db["recipients"],
        serde_json::json!(["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"])
    );
}

#[test]
fn a_huge_or_malformed_metadata_is_listed_as_unreadable_with_the_reason() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    complete(d, "good_20261126T100203Z");
    // 4 GiB, sparse: never read.
    let huge = incomplete(d, "huge_20261126T100203Z");
    fs::File::create(huge.join("metadata"))
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    backup(d, "bad_20261126T100203Z", 1, Some("backup_activity: [\n"));
    backup(d, "list_20261126T100203Z", 1, Some("- a\n- b\n"));
    // A terminal escape in a value (YAML's `\e`): a codec the restore would refuse, so
    // unreadable, and the reason shown escaped.
    backup(
        d,
        "esc_20261126T100203Z",
        1,
        Some(
            "backup_activity:\n  start_time: s\n  finish_time: f\nbbr_agent:\n  format: 1\n  compression: \"\\e[31mzstd\"\n",
        ),
    );

    let run = agent(d, &["backups", "list", "--json"]);
    run.assert_success();
    let doc = run.json();
    let state = |name: &str| {
        let b = doc["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed\n{}", run.explain()));
        (
            b["state"].as_str().unwrap().to_string(),
            b["unreadable"].as_str().unwrap_or("").to_string(),
        )
    };
    assert_eq!(state("good_20261126T100203Z").0, "complete");
    let (s, why) = state("esc_20261126T100203Z");
    assert_eq!(
        s, "unreadable",
        "a backup the restore refuses is never complete"
    );
    assert!(why.contains("does not know"), "{why}");
    let (s, why) = state("huge_20261126T100203Z");
    assert_eq!(s, "unreadable");
    assert!(
        why.contains("4294967296 bytes, more than the 1024 MiB read"),
        "{why}"
    );
    let (s, why) = state("bad_20261126T100203Z");
    assert_eq!(s, "unreadable");
    assert!(why.contains("not valid YAML"), "{why}");
    let (s, why) = state("list_20261126T100203Z");
    assert_eq!(s, "unreadable");
    assert!(why.contains("not BBR metadata"), "{why}");

    let run = agent(d, &["backups", "list"]);
    run.assert_success()
        .assert_stdout_contains("unreadable: the metadata is 4294967296 bytes")
        .assert_stdout_contains("\\u{1b}[31mzstd");
    assert!(!run.stdout.contains('\u{1b}'), "{}", run.explain());
}

#[test]
fn list_of_a_missing_directory_says_so() {
    let dest = tempfile::tempdir().unwrap();
    let run = Run::new(
        &["backups".into(), "list".into(), "nope".into()],
        dest.path(),
    );
    run.assert_code(1)
        .assert_stderr_contains("nope is not a directory: give the directory that holds");
    let empty = Run::new(&["backups".into(), "list".into(), ".".into()], dest.path());
    empty
        .assert_success()
        .assert_stdout_contains("No backups under .");
    let inside = complete(dest.path(), "cf_20261126T100203Z");
    let run = Run::new(&["backups".into(), "list".into(), ".".into()], &inside);
    run.assert_success().assert_stdout_contains(
        "No backups under .. It holds a `metadata` of its own: it is a backup; give the directory that holds it.",
    );
}

/// The backups the prune tests start from, and what each rule makes of them.
///
/// cf, complete: 11-26 two (22:00, 08:00), 11-25, 11-18 (the week before), 10-31 (October),
/// 09-15 (September). cf, incomplete: 11-20 (old), one an hour ago (may be running).
/// db: one complete backup, 2025-01-01, and an old incomplete one with a partial file.
/// x: an unreadable metadata.
fn prune_fixture(d: &Path) -> String {
    for name in [
        "cf_20261126T220000Z",
        "cf_20261126T080000Z",
        "cf_20261125T120000Z",
        "cf_20261118T120000Z",
        "cf_20261031T120000Z",
        "cf_20260915T120000Z",
        "db_20250101T000000Z",
    ] {
        complete(d, name);
    }
    incomplete(d, "cf_20261120T120000Z");
    // Its metadata written, but not finished: BBR's failed run.
    backup(d, "cf_20261119T120000Z", 5, Some(&metadata(false, "")));
    let young = name_ago("cf", 3600);
    incomplete(d, &young);
    let db_old = incomplete(d, "db_20241231T000000Z");
    write_file(&db_old.join(".bbr-agent-partial-abc123"), b"half a tar");
    backup(d, "x_20200101T000000Z", 1, Some("backup_activity: [\n"));
    young
}

#[test]
fn prune_keeps_by_restic_rules_removes_old_incomplete_and_keeps_the_only_complete_one() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let young = prune_fixture(d);
    let run = agent(
        d,
        &[
            "backups",
            "prune",
            "--keep-daily",
            "2",
            "--keep-monthly",
            "2",
        ],
    );
    run.assert_success();
    for line in [
        "keep cf_20261126T220000Z (daily, monthly)",
        "keep cf_20261125T120000Z (daily)",
        "keep cf_20261031T120000Z (monthly)",
        "keep db_20250101T000000Z (daily, monthly)",
        "remove cf_20261126T080000Z (kept by no rule)",
        "remove cf_20261118T120000Z (kept by no rule)",
        "remove cf_20260915T120000Z (kept by no rule)",
        "remove cf_20261120T120000Z (incomplete: started 2026-11-20T12:00:00Z, more than a day ago",
        "remove cf_20261119T120000Z (incomplete",
        "remove db_20241231T000000Z (incomplete",
        "leave x_20200101T000000Z (unreadable: the metadata is not valid YAML",
        &format!("leave {young} (incomplete, started"),
        "Kept 6, removed 6",
    ] {
        run.assert_stdout_contains(line);
    }
    // The incomplete ones go before any complete one.
    let first_complete = run.stdout.find("remove cf_20261126T080000Z").unwrap();
    for incomplete in [
        "remove cf_20261120",
        "remove cf_20261119",
        "remove db_20241231",
    ] {
        assert!(
            run.stdout.find(incomplete).unwrap() < first_complete,
            "{}",
            run.explain()
        );
    }
    let mut expected = vec![
        "cf_20261031T120000Z".to_string(),
        "cf_20261125T120000Z".into(),
        "cf_20261126T220000Z".into(),
        "db_20250101T000000Z".into(),
        "x_20200101T000000Z".into(),
        young,
    ];
    expected.sort();
    assert_eq!(remaining(d), expected, "{}\n{}", run.explain(), listing(d));
    // A second run with the same policy has nothing left to remove.
    let again = agent(
        d,
        &[
            "backups",
            "prune",
            "--keep-daily",
            "2",
            "--keep-monthly",
            "2",
        ],
    );
    again
        .assert_success()
        .assert_stdout_contains("Kept 6, removed 0");
}

#[test]
fn prune_keeps_the_newest_of_each_deployment_with_keep_last_1() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let young = prune_fixture(d);
    let run = agent(d, &["backups", "prune", "--keep-last", "1"]);
    run.assert_success();
    let mut expected = vec![
        "cf_20261126T220000Z".to_string(),
        "db_20250101T000000Z".into(),
        "x_20200101T000000Z".into(),
        young,
    ];
    expected.sort();
    assert_eq!(remaining(d), expected, "{}\n{}", run.explain(), listing(d));
}

#[test]
fn a_dry_run_prints_the_same_plan_and_removes_nothing() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    prune_fixture(d);
    let before = listing(d);
    let run = agent(
        d,
        &[
            "backups",
            "prune",
            "--keep-daily",
            "2",
            "--keep-monthly",
            "2",
            "--dry-run",
        ],
    );
    run.assert_success()
        .assert_stdout_contains("would remove cf_20261126T080000Z (kept by no rule)")
        .assert_stdout_contains("would remove db_20241231T000000Z (incomplete")
        .assert_stdout_contains("Dry run: would keep 6 and remove 6");
    assert_eq!(listing(d), before, "{}", run.explain());
}

#[test]
fn prune_without_a_policy_or_with_only_zeros_is_refused() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    complete(d, "cf_20261126T220000Z");
    complete(d, "cf_20261125T220000Z");
    let before = listing(d);
    for args in [
        &["backups", "prune"][..],
        &["backups", "prune", "--keep-last", "0", "--keep-daily", "0"][..],
    ] {
        let run = agent(d, args);
        run.assert_code(2).assert_stderr_contains(
            "backups prune needs a policy: give at least one of --keep-last",
        );
    }
    assert_eq!(listing(d), before);
}

#[test]
fn a_symlink_that_looks_like_an_old_backup_is_neither_listed_nor_followed_by_prune() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path().join("dest");
    complete(&d, "cf_20261126T220000Z");
    // Outside the place: a directory that would be an old incomplete backup.
    let outside = incomplete(dest.path(), "elsewhere");
    std::os::unix::fs::symlink(&outside, d.join("cf_20200101T000000Z")).unwrap();
    let run = agent(&d, &["backups", "list", "--json"]);
    run.assert_success();
    assert_eq!(
        run.json()["backups"].as_array().unwrap().len(),
        1,
        "{}",
        run.explain()
    );
    let run = agent(&d, &["backups", "prune", "--keep-last", "1"]);
    run.assert_success()
        .assert_stdout_contains("Kept 1, removed 0");
    assert!(outside.join("db-0-pg.tar").exists(), "{}", run.explain());
    assert!(d.join("cf_20200101T000000Z").exists());
}

/// Sets `path`'s mtime `secs_ago` seconds back.
fn age(path: &Path, secs_ago: u64) {
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(secs_ago);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(then)
        .unwrap();
}

/// A run that takes days (a big database) beats on its claim: prune leaves it however old it
/// is, and removes a run whose heartbeat stopped more than two hours ago (killed) however young
/// it is. The heartbeat's time is the older of the claim's line (the run's clock) and its
/// file's mtime (the store's). A claim without a heartbeat (stop 12's) is judged by age.
#[test]
fn prune_judges_a_claimed_incomplete_backup_by_its_runs_heartbeat_not_its_age() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let day = 86_400;
    let claimed = |name: &str, claim: &str| {
        let dir = incomplete(d, name);
        write_file(&dir.join(".bbr-agent-run-0123"), claim.as_bytes())
    };
    complete(d, "cf_20261126T220000Z");
    let long_running = name_ago("cf", 3 * day);
    claimed(&long_running, &claim_with_heartbeat("cf", 0));
    // Its line says now, its file was last written three hours ago: stopped.
    let killed_old = name_ago("cf", 3 * day + 10);
    let claim = claimed(&killed_old, &claim_with_heartbeat("cf", 0));
    age(&claim, 3 * 3600);
    // Started three hours ago, its line says it last beat then: stopped.
    let killed_young = name_ago("cf", 3 * 3600);
    claimed(&killed_young, &claim_with_heartbeat("cf", 3 * 3600));
    // Stop 12's claims: the owner alone.
    let owner_only = "bbr-agent backup\ndeployment: \"cf\"\nfrom: \"\"\ninstances: []\n";
    let old_unbeating = name_ago("cf", 3 * day + 20);
    claimed(&old_unbeating, owner_only);
    let young_unbeating = name_ago("cf", 3600 + 20);
    claimed(&young_unbeating, owner_only);

    // The listing shows each run's last heartbeat.
    let list = agent(d, &["backups", "list", "--json"]);
    list.assert_success();
    let listed = list.json();
    let of = |name: &str| {
        listed["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed\n{}", list.explain()))
            .clone()
    };
    let beat = of(&long_running)["last_heartbeat"].clone();
    assert!(
        beat.as_str()
            .is_some_and(|t| t.len() == 20 && t.ends_with('Z')),
        "{}",
        list.explain()
    );
    assert_eq!(
        of(&old_unbeating)["last_heartbeat"],
        serde_json::Value::Null
    );
    agent(d, &["backups", "list"])
        .assert_success()
        .assert_stdout_contains(&format!(
            "incomplete (last heartbeat {})",
            beat.as_str().unwrap()
        ));

    let run = agent(d, &["backups", "prune", "--keep-last", "1"]);
    run.assert_success();
    for line in [
        format!("leave {long_running} (incomplete, started "),
        "its run is still going, last heartbeat at ".to_string(),
        format!("remove {killed_old} (incomplete: started "),
        format!("remove {killed_young} (incomplete: started "),
        "more than two hours ago: the run stopped)".to_string(),
        format!("remove {old_unbeating} (incomplete: started "),
        format!("leave {young_unbeating} (incomplete, started "),
        "Kept 3, removed 3".to_string(),
    ] {
        run.assert_stdout_contains(&line);
    }
    let mut kept = vec![
        "cf_20261126T220000Z".to_string(),
        long_running,
        young_unbeating,
    ];
    kept.sort();
    assert_eq!(remaining(d), kept, "{}", run.explain());
}

/// What the listing cannot see (a sub-directory, a name that is not UTF-8) keeps a backup's
/// directory after its files are removed: prune says so and where, it does not report the
/// backup removed.
#[test]
fn prune_names_a_backup_directory_that_still_holds_what_it_cannot_list() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    complete(d, "cf_20261126T220000Z");
    let old = complete(d, "cf_20261031T120000Z");
    write_file(&old.join("notes/readme"), b"an operator's notes");
    fs::write(
        old.join(std::ffi::OsStr::from_bytes(b"odd-\xff")),
        b"not UTF-8",
    )
    .unwrap();
    let run = agent(d, &["backups", "prune", "--keep-last", "1"]);
    run.assert_code(1)
        .assert_stderr_contains("cf_20261031T120000Z")
        .assert_stderr_contains("still holds entries that are not a backup's files");
    assert!(old.join("notes/readme").exists(), "{}", listing(d));
    assert!(!old.join("metadata").exists(), "{}", listing(d));
    assert!(
        d.join("cf_20261126T220000Z/metadata").exists(),
        "{}",
        listing(d)
    );
}

/// A claim whose heartbeat line and file date are both in the future (a local store lets
/// anyone date a file) proves no live run: its backup is judged by its age, as one without a
/// heartbeat, not kept for ever.
#[test]
fn a_heartbeat_dated_to_come_keeps_no_old_incomplete_backup() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    complete(d, "cf_20261126T220000Z");
    let old = name_ago("cf", 3 * 86_400);
    let dir = incomplete(d, &old);
    let claim = write_file(
        &dir.join(".bbr-agent-run-0123"),
        b"bbr-agent backup\ndeployment: \"cf\"\nfrom: \"\"\ninstances: []\nheartbeat: 2999-01-01T00:00:00Z\n",
    );
    let next_year = std::time::SystemTime::now() + std::time::Duration::from_secs(365 * 86_400);
    fs::File::options()
        .write(true)
        .open(&claim)
        .unwrap()
        .set_modified(next_year)
        .unwrap();
    let run = agent(d, &["backups", "prune", "--keep-last", "1"]);
    run.assert_success()
        .assert_stdout_contains(&format!("remove {old} (incomplete"));
    assert_eq!(remaining(d), ["cf_20261126T220000Z"], "{}", run.explain());
}

/// Prune judges a directory's claims as the next run's cleanup does: it takes the run for
/// stopped only when every claim has a heartbeat and the newest stopped. A stopped heartbeat
/// beside a claim without one (a stop-12 run, judged by its age) leaves a backup younger than a
/// day; a directory with more claims than are read is left whatever the first ones say.
#[test]
fn prune_leaves_a_backup_unless_all_its_claims_say_its_run_stopped() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let owner_only = "bbr-agent backup\ndeployment: \"cf\"\nfrom: \"\"\ninstances: []\n";
    complete(d, "cf_20261126T220000Z");
    let mixed = name_ago("cf", 3 * 3600);
    let dir = incomplete(d, &mixed);
    write_file(
        &dir.join(".bbr-agent-run-0001"),
        claim_with_heartbeat("cf", 3 * 3600).as_bytes(),
    );
    write_file(&dir.join(".bbr-agent-run-0002"), owner_only.as_bytes());
    // Eight stopped claims sort before a beating one.
    let crowded = name_ago("cf", 3 * 86_400);
    let dir = incomplete(d, &crowded);
    for i in 0..8 {
        write_file(
            &dir.join(format!(".bbr-agent-run-0{i}")),
            claim_with_heartbeat("cf", 3 * 3600).as_bytes(),
        );
    }
    write_file(
        &dir.join(".bbr-agent-run-9"),
        claim_with_heartbeat("cf", 0).as_bytes(),
    );
    // Every claim stopped: removed, as before.
    let stopped = name_ago("cf", 4 * 3600);
    let dir = incomplete(d, &stopped);
    for i in 0..2 {
        write_file(
            &dir.join(format!(".bbr-agent-run-0{i}")),
            claim_with_heartbeat("cf", 3 * 3600).as_bytes(),
        );
    }

    let run = agent(d, &["backups", "prune", "--keep-last", "1"]);
    run.assert_success()
        .assert_stdout_contains(&format!("leave {mixed} (incomplete, started "))
        .assert_stdout_contains("less than a day ago: it may still be running)")
        .assert_stdout_contains(&format!("leave {crowded} (incomplete, started "))
        .assert_stdout_contains("more claims than a prune reads (8)")
        .assert_stdout_contains(&format!("remove {stopped} (incomplete: started "));
    let mut kept = vec!["cf_20261126T220000Z".to_string(), mixed, crowded];
    kept.sort();
    assert_eq!(remaining(d), kept, "{}", run.explain());
}

/// A run killed before its first tar (a lock script that hung) leaves only its claim, and the
/// next run's cleanup of a stopped run's unfinished writes leaves the claim too: such a
/// directory is an incomplete backup to the catalogue, listed with its heartbeat and judged by
/// it, so a prune removes it once the run stopped instead of it staying for ever unseen.
#[test]
fn a_directory_holding_only_a_claim_is_an_incomplete_backup_that_prune_judges() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    complete(d, "cf_20261126T220000Z");
    let stopped = name_ago("cf", 4 * 3600);
    write_file(
        &d.join(&stopped).join(".bbr-agent-run-0123"),
        claim_with_heartbeat("cf", 3 * 3600).as_bytes(),
    );
    let beating = name_ago("cf", 600);
    write_file(
        &d.join(&beating).join(".bbr-agent-run-4567"),
        claim_with_heartbeat("cf", 0).as_bytes(),
    );
    let list = agent(d, &["backups", "list"]);
    list.assert_success()
        .assert_stdout_contains(&stopped)
        .assert_stdout_contains(&beating);
    let run = agent(d, &["backups", "prune", "--keep-last", "1"]);
    run.assert_success()
        .assert_stdout_contains(&format!("remove {stopped} (incomplete: started "))
        .assert_stdout_contains(&format!("leave {beating} (incomplete, started "));
    let mut kept = vec!["cf_20261126T220000Z".to_string(), beating];
    kept.sort();
    assert_eq!(remaining(d), kept, "{}", run.explain());
}
