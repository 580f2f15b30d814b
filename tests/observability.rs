//! What the operator sees: the JSON event stream, the HTML report (rendered in a real headless
//! Chromium), the VM log, live and failure output, exit-127 hints, completions and man page.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{AGENT, Run, Vm, write_file};
use serde_json::Value;

/// Two jobs, api locked before db; db backs up a file and says so on both streams.
fn vm() -> Vm {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("api")
        .recording_locks()
        .metadata("backup_should_be_locked_before:\n- {job_name: db, release: acme}");
    vm.job("db").recording_locks().script(
        "backup",
        "echo \"$ME\" >> \"$LOG\"\necho 'dumping tables'\necho 'a warning on stderr' >&2\nhead -c 70000 /dev/zero > \"$BBR_ARTIFACT_DIRECTORY/dump\"",
    );
    vm
}

fn backup(vm: &Vm, extra: &[&str]) -> common::Run {
    let artifacts = vm.artifacts().display().to_string();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["backup", "--artifact-path", &artifacts]);
    vm.agent(&args)
}

#[test]
fn json_events_name_every_job_and_phase_and_parse_line_by_line() {
    let vm = vm();
    let run = backup(&vm, &["--log-format", "json"]);
    run.assert_success();
    assert!(
        run.stdout.is_empty(),
        "JSON mode keeps stdout clean\n{}",
        run.explain()
    );
    let events: Vec<Value> = run
        .stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", run.explain()))
        })
        .collect();
    for e in &events {
        for key in ["timestamp", "level", "event"] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
    }
    let finished: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e["event"] == "script_finished")
        .map(|e| {
            (
                e["job"].as_str().unwrap().to_string(),
                e["phase"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (job, phase) in [
        ("api", "lock"),
        ("db", "lock"),
        ("db", "backup"),
        ("db", "unlock"),
        ("api", "unlock"),
    ] {
        assert!(
            finished.contains(&(job.to_string(), phase.to_string(), "ok".to_string())),
            "no {job} {phase} event in {finished:?}"
        );
    }
    let script = events
        .iter()
        .find(|e| e["event"] == "script_finished")
        .unwrap();
    assert_eq!(script["instance"], "backend/0");
    assert_eq!(script["exit_status"], 0);
    assert!(script["duration_ms"].is_u64());
    let transfer = events
        .iter()
        .find(|e| e["event"] == "artifact_transferred")
        .unwrap();
    assert_eq!(
        (transfer["job"].as_str(), transfer["phase"].as_str()),
        (Some("db"), Some("drain"))
    );
    assert!(transfer["bytes"].as_u64().unwrap() > 70_000, "{transfer}");
    assert_eq!(transfer["files"], 1);
    assert_eq!(events.first().unwrap()["event"], "run_started");
    let last = events.last().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["exit_status"].as_i64()),
        (Some("run_finished"), Some(0))
    );
}

#[test]
fn the_report_names_every_job_shows_lock_windows_and_renders_in_chromium() {
    let vm = vm();
    // Locked, with nothing to unlock it: not "never unlocked".
    vm.job("cache").recording("pre-backup-lock");
    backup(&vm, &[]).assert_success();
    let report = vm.artifact_dir().join("report.html");
    let html = fs::read_to_string(&report).expect("report.html in the artifact directory");
    for text in [
        "backup of acme",
        "succeeded",
        "api",
        "db",
        "Lock window",
        "KiB, 1 file<",
    ] {
        assert!(html.contains(text), "report lacks {text:?}");
    }
    // A lock window for both locked jobs: a duration in the lock-window column.
    let windows = html.matches("<td class=\"num\">").count();
    assert!(windows >= 4, "{html}");
    assert!(!html.contains("not locked"), "both jobs were locked");

    let (dom, png) = render_in_chromium(&report, vm.dir.path());
    assert!(
        dom.contains("backup of acme") && dom.contains("<svg"),
        "{dom}"
    );
    assert!(
        png > 10_000,
        "a screenshot of a rendered page, not an empty one ({png} bytes)"
    );
    assert!(dom.contains("no unlock script"), "{dom}");
    assert!(!dom.contains("never unlocked"), "{dom}");

    // The time axis runs from the first step's start to the last step's end, wall clock UTC.
    let cells = |row: &str| -> Vec<String> {
        row.split("<td")
            .skip(1)
            .map(|c| {
                let text = c.split_once('>').unwrap().1;
                text.split("</td>").next().unwrap().to_string()
            })
            .collect()
    };
    let steps: Vec<Vec<String>> = dom
        .split("<tr>")
        .filter(|row| row.contains("<td>backend/0</td>") && !row.contains("<svg"))
        .map(cells)
        .collect();
    assert!(steps.len() >= 6, "a row per step: {steps:?}");
    let clock = |t: &str| {
        let parts: Vec<&str> = t.split(':').collect();
        assert!(
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && p.parse::<u8>().is_ok()),
            "HH:MM:SS, not {t:?}"
        );
        t.to_string()
    };
    for step in &steps {
        // Instance, job, step, result, started, ended, took.
        assert_eq!(step.len(), 7, "{step:?}");
        assert!(clock(&step[4]) <= clock(&step[5]), "{step:?}");
    }
    let tick = |class: &str| {
        let after = dom
            .split(&format!("class=\"tick {class}\""))
            .nth(1)
            .unwrap_or_else(|| panic!("no {class} tick on the time axis: {dom}"));
        clock(after.split_once('>').unwrap().1.split('<').next().unwrap())
    };
    let first = steps.iter().map(|s| s[4].clone()).min().unwrap();
    let last = steps.iter().map(|s| s[5].clone()).max().unwrap();
    assert_eq!((tick("start"), tick("end")), (first, last), "{dom}");
    assert!(dom.contains("Timeline (UTC)"), "{dom}");
    assert!(
        dom.contains("<title>backup ") && dom.contains(" UTC</title>"),
        "each bar's tooltip has its start and end: {dom}"
    );
}

#[test]
fn a_failed_run_has_a_report_with_the_failing_output() {
    let vm = vm();
    vm.job("db")
        .script("backup", "echo 'disk on fire' >&2; exit 3");
    backup(&vm, &[]).assert_code(1);
    let html = fs::read_to_string(vm.artifact_dir().join("report.html")).unwrap();
    assert!(html.contains("failed (exit code 1)"), "{html}");
    assert!(html.contains("stderr: disk on fire"), "{html}");
    assert!(html.contains("exit status 3"), "{html}");
}

#[test]
fn the_vm_log_holds_every_script_line_with_a_timestamp() {
    let vm = vm();
    backup(&vm, &[]).assert_success();
    let log = fs::read_to_string(vm.root().join("var/vcap/sys/log/bbr-agent/bbr-agent.log"))
        .expect("the VM log exists");
    let line = log
        .lines()
        .find(|l| l.contains("backend/0 db backup stdout: dumping tables"))
        .unwrap_or_else(|| panic!("no script output in the log:\n{log}"));
    assert!(
        line.starts_with("20") && line.contains('T'),
        "timestamped: {line}"
    );
    assert!(
        log.contains("backend/0 db backup stderr: a warning on stderr"),
        "{log}"
    );
    assert!(
        log.contains("backend/0 api pre-backup-lock: succeeded"),
        "{log}"
    );
    // A second run appends (into another artifact path: names are to the second).
    let elsewhere = vm.dir.path().join("second");
    fs::create_dir_all(&elsewhere).unwrap();
    vm.agent(&["backup", "--artifact-path", elsewhere.to_str().unwrap()])
        .assert_success();
    let again =
        fs::read_to_string(vm.root().join("var/vcap/sys/log/bbr-agent/bbr-agent.log")).unwrap();
    assert_eq!(again.matches("dumping tables").count(), 2);
}

#[test]
fn verbose_streams_prefixed_output_and_a_failure_shows_both_streams() {
    let vm = vm();
    let run = backup(&vm, &["-v"]);
    run.assert_success()
        .assert_stderr_contains("backend/0 db backup stdout: dumping tables")
        .assert_stderr_contains("backend/0 db backup stderr: a warning on stderr");
    let quiet = backup(&Vm::with_identity("acme", "backend"), &[]);
    assert!(!quiet.stderr.contains("dumping"), "nothing live without -v");

    let failing = Vm::with_identity("acme", "backend");
    failing.job("db").script(
        "backup",
        "echo 'step 1 of 2'\necho 'permission denied: /data' >&2\nexit 1",
    );
    let run = backup(&failing, &[]);
    run.assert_code(1)
        .assert_stdout_contains("backend/0 db backup: FAILED (exit status 1)")
        .assert_stderr_contains("backend/0 db backup stdout: step 1 of 2")
        .assert_stderr_contains("backend/0 db backup stderr: permission denied: /data");
}

#[test]
fn exit_127_says_which_command_was_not_found() {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("bbr-acmedb").script(
        "backup",
        "/var/vcap/jobs/database-backup-restorer/bin/backup /x/config.json",
    );
    backup(&vm, &[])
        .assert_code(1)
        .assert_stdout_contains("database-backup-restorer/bin/backup: not found")
        .assert_stdout_contains("colocated job");
}

#[test]
fn completions_and_the_man_page_are_generated() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef bbr-agent"),
        ("fish", "complete -c bbr-agent"),
    ] {
        let out = Command::new(AGENT)
            .args(["completions", shell])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success() && text.contains(marker),
            "{shell}: {text}"
        );
        assert!(
            text.contains("backup-cleanup"),
            "{shell} completes subcommands"
        );
    }
    let out = Command::new(AGENT).arg("man").output().unwrap();
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.contains(".TH bbr-agent") && page.contains("deployment"),
        "{page}"
    );
}

/// The text of the element `id` in a DOM dump: from its opening tag to `</section>`.
fn section<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let end = dom[start..].find("</section>")? + start;
    Some(&dom[start..end])
}

#[test]
fn a_failed_runs_report_shows_its_next_step_the_exact_cleanup_command_in_chromium() {
    let vm = vm();
    // A failed unlock leaves its job locked (a failed lock whose unlocks ran leaves nothing).
    vm.job("db")
        .script("post-backup-unlock", "echo unlock broke >&2\nexit 1");
    let run = backup(&vm, &[]);
    run.assert_code(8);
    let last = run.stderr.lines().last().unwrap_or_default();
    let command = last
        .strip_prefix("error: to clean up, run: ")
        .unwrap_or_else(|| panic!("the last line names no cleanup\n{}", run.explain()));
    let (dom, _) = render_in_chromium(&vm.artifact_dir().join("report.html"), vm.dir.path());
    let next = section(&dom, "next-step")
        .unwrap_or_else(|| panic!("the report of a failed run has no next step\n{dom}"));
    assert!(
        next.contains("Next step") && next.contains(&format!("<code>{command}</code>")),
        "the next step is not the exact cleanup command {command:?}\n{next}"
    );
    assert_eq!(
        dom.matches(command).count(),
        1,
        "the cleanup command is shown more than once\n{dom}"
    );
}

#[test]
fn a_failed_run_that_left_nothing_locked_says_so_and_a_good_run_has_no_next_step() {
    let vm = self::vm();
    vm.job("db").script("backup", "exit 3");
    backup(&vm, &[]).assert_code(1);
    let failed = vm.artifact_dir();
    let (dom, _) = render_in_chromium(&failed.join("report.html"), vm.dir.path());
    let next = section(&dom, "next-step")
        .unwrap_or_else(|| panic!("the report of a failed run has no next step\n{dom}"));
    assert!(
        next.contains("Nothing was left locked") && !next.contains("<code>"),
        "{next}"
    );

    let vm = self::vm();
    backup(&vm, &[]).assert_success();
    let (dom, _) = render_in_chromium(&vm.artifact_dir().join("report.html"), vm.dir.path());
    assert!(
        dom.contains("succeeded") && section(&dom, "next-step").is_none(),
        "a run that succeeded has a next step\n{dom}"
    );
}

/// Loads `page` in headless Chromium: its DOM after rendering, and a screenshot's size.
fn render_in_chromium(page: &Path, scratch: &Path) -> (String, u64) {
    let chromium = Path::new("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "headless Chromium is needed: install Debian's chromium (scripts/test does)"
    );
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let url = format!("file://{}", page.display());
    let profile = format!("--user-data-dir={}", scratch.join("chromium").display());
    let dom = Command::new(chromium)
        .args(base)
        .arg(&profile)
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    let shot = scratch.join("report.png");
    let _ = write_file(&shot, b"");
    let status = Command::new(chromium)
        .args(base)
        .arg(&profile)
        .arg(format!("--screenshot={}", shot.display()))
        .args(["--window-size=1200,800", &url])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    (
        String::from_utf8_lossy(&dom.stdout).into_owned(),
        fs::metadata(&shot).unwrap().len(),
    )
}

#[test]
fn a_restore_writes_its_report_where_asked_and_leaves_the_backup_untouched() {
    let vm = vm();
    backup(&vm, &[]).assert_success();
    let artifact = vm.artifact_dir();
    let before: Vec<_> = fs::read_dir(&artifact)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    vm.job("db").recording("restore");
    let report = vm.dir.path().join("restore.html");
    vm.agent(&[
        "restore",
        "--artifact-path",
        artifact.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ])
    .assert_success();
    let html = fs::read_to_string(&report).expect("the restore report where asked");
    assert!(
        html.contains("restore of acme") && html.contains("pre-restore-lock"),
        "{html}"
    );
    let after: Vec<_> = fs::read_dir(&artifact)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "the backup directory is only read");
}

/// The `script_finished` events of `run`'s JSON stream for metadata scripts: (instance, job,
/// outcome), each with a duration.
fn metadata_events(run: &common::Run) -> Vec<(String, String, String)> {
    run.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "script_finished" && e["script"] == "metadata")
        .map(|e| {
            assert_eq!(e["phase"], "metadata", "{e}");
            assert!(e["duration_ms"].is_u64(), "{e}\n{}", run.explain());
            (
                e["instance"].as_str().unwrap_or_default().to_string(),
                e["job"].as_str().unwrap_or_default().to_string(),
                e["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_metadata_script_gets_a_done_line_and_a_finished_event_like_any_script() {
    let vm = vm();
    backup(&vm, &[])
        .assert_success()
        .assert_stdout_contains("backend/0 api metadata: done in ");
    let run = backup(&self::vm(), &["--log-format", "json"]);
    run.assert_success();
    assert_eq!(
        metadata_events(&run),
        [("backend/0".into(), "api".into(), "ok".into())],
        "{}",
        run.explain()
    );
}

#[test]
fn a_failed_metadata_script_gets_a_failed_line_with_its_output() {
    let vm = vm();
    vm.job("api")
        .script("metadata", "echo 'no config rendered' >&2; exit 4");
    backup(&vm, &[])
        .assert_code(1)
        .assert_stdout_contains("backend/0 api metadata: FAILED (exit status 4) after ")
        .assert_stderr_contains("backend/0 api metadata stderr: no config rendered");
    // The run left its artifact directory: another second's name, or another VM.
    let vm = self::vm();
    vm.job("api")
        .script("metadata", "echo 'no config rendered' >&2; exit 4");
    let run = backup(&vm, &["--log-format", "json"]);
    assert_eq!(
        metadata_events(&run),
        [("backend/0".into(), "api".into(), "failed".into())],
        "{}",
        run.explain()
    );
}

/// Two VMs through the driver: each metadata script is reported with its instance.
fn fleet() -> common::fleet::Fleet {
    let mut fleet = common::fleet::Fleet::new();
    fleet
        .add("api", 0)
        .job("api")
        .recording_locks()
        .metadata("backup_should_be_locked_before:\n- {job_name: db, release: acme}");
    fleet
        .add("db", 0)
        .job("db")
        .recording_locks()
        .metadata("{}")
        .recording("backup");
    fleet
}

#[test]
fn metadata_scripts_through_the_driver_get_done_lines_and_finished_events() {
    let fleet = fleet();
    let inventory = fleet.local_inventory();
    let run = fleet.backup(&inventory, &[]);
    run.assert_success()
        .assert_stdout_contains("api/0 api metadata: done in ")
        .assert_stdout_contains("db/0 db metadata: done in ");
    let fleet = self::fleet();
    let inventory = fleet.local_inventory();
    let run = fleet.driver(
        &inventory,
        &[
            "--log-format",
            "json",
            "backup",
            "--artifact-path",
            fleet.artifacts().to_str().unwrap(),
        ],
    );
    run.assert_success();
    let mut events = metadata_events(&run);
    events.sort();
    assert_eq!(
        events,
        [
            ("api/0".into(), "api".into(), "ok".into()),
            ("db/0".into(), "db".into(), "ok".into())
        ],
        "{}",
        run.explain()
    );
}

#[test]
fn a_failed_metadata_script_through_the_driver_gets_a_failed_line_with_its_output() {
    let fleet = fleet();
    fleet
        .vm("db", 0)
        .job("db")
        .script("metadata", "echo 'no config rendered' >&2; exit 4");
    let inventory = fleet.local_inventory();
    fleet
        .backup(&inventory, &[])
        .assert_code(1)
        .assert_stdout_contains("db/0 db metadata: FAILED (exit status 4) after ")
        .assert_stderr_contains("db/0 db metadata stderr: no config rendered");
}

/// What a run printed, with the parts that differ from run to run taken out: a duration's
/// figure, and each JSON event's timestamp and duration.
fn normalised(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(mut event)) => {
                event.remove("timestamp");
                event.remove("duration_ms");
                Value::Object(event).to_string()
            }
            _ => match l.find(" after ") {
                Some(at) => format!("{} after <time>", &l[..at]),
                None => l.to_string(),
            },
        })
        // The VM's own log line, which a local run writes to its stderr.
        .filter(|l| !l.starts_with("bbr-agent: "))
        .collect()
}

/// The typed failure travels from the VM through `serve` to the driver's console: a failed
/// metadata script's exit, output and error line are shown through the driver exactly as a
/// local run of the same VM shows them, in both log formats, for a check and for a backup.
#[test]
fn a_failed_metadata_script_is_shown_the_same_through_the_driver_as_locally() {
    let mut fleet = common::fleet::Fleet::new();
    fleet
        .add("db", 0)
        .job("db")
        .recording_locks()
        .metadata("{}");
    fleet.vm("db", 0).job("db").script(
        "metadata",
        "echo 'rendering config'; echo 'no config rendered' >&2; exit 4",
    );
    let inventory = fleet.local_inventory();
    let artifacts = fleet.artifacts().display().to_string();
    let root = fleet.vm("db", 0).root().display().to_string();
    for args in [
        &["pre-backup-check"][..],
        &["--log-format", "json", "pre-backup-check"][..],
        &["backup", "--artifact-path", &artifacts][..],
    ] {
        let remote = fleet.driver(&inventory, args);
        let mut local_args = vec!["--root", &root];
        local_args.extend_from_slice(args);
        let local = Run::new(
            &local_args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            fleet.dir.path(),
        );
        remote.assert_code(1);
        local.assert_code(1);
        let shown = |run: &Run| (normalised(&run.stdout), normalised(&run.stderr));
        assert_eq!(
            shown(&remote),
            shown(&local),
            "through the driver:\n{}\nlocally:\n{}",
            remote.explain(),
            local.explain()
        );
        let all = format!("{}{}", remote.stdout, remote.stderr);
        for text in [
            "exit status 4",
            "rendering config",
            "no config rendered",
            "job 'db': metadata script failed (exit status 4); nothing was locked",
        ] {
            assert!(all.contains(text), "{text:?} in\n{}", remote.explain());
        }
    }
    assert!(
        fleet.calls().is_empty(),
        "nothing was locked: {:?}",
        fleet.calls()
    );
}
