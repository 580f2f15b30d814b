//! Lock order from the jobs' metadata (docs/behaviour.md, "Lock order"), seen through a real local backup and
//! restore: locks run step by step in the declared order, unlocks in exactly the reverse order,
//! and a cycle stops the run before anything is locked, naming every job of the cycle.

mod common;

use std::collections::BTreeSet;
use std::fs;

use common::{Run, Vm};

/// `metadata` YAML: `backup` and `restore` list the jobs this one is locked before.
fn metadata(backup: &[&str], restore: &[&str]) -> String {
    let list = |jobs: &[&str]| -> String {
        if jobs.is_empty() {
            return " []".to_string();
        }
        jobs.iter()
            .map(|j| format!("\n- job_name: {j}\n  release: acme-release"))
            .collect()
    };
    format!(
        "backup_should_be_locked_before:{}\nrestore_should_be_locked_before:{}",
        list(backup),
        list(restore)
    )
}

/// A job with every script: lock and unlock scripts record themselves (post-backup-unlock
/// also records BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL), backup and restore copy its data.
fn full_job(vm: &Vm, name: &str, backup_before: &[&str], restore_before: &[&str]) {
    let job = vm.job(name);
    job.recording_locks()
        .copying_backup_restore()
        .metadata(&metadata(backup_before, restore_before))
        .script(
            "post-backup-unlock",
            "echo \"$ME $BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL\" >> \"$LOG\"",
        );
    fs::write(vm.data_dir(name).join("data"), format!("{name} data\n")).unwrap();
}

fn backup(vm: &Vm) -> Run {
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
}

fn lines(jobs: &[&str], script: &str) -> Vec<String> {
    jobs.iter().map(|j| format!("{j} {script}")).collect()
}

fn sorted(lines: &[String]) -> Vec<String> {
    let mut v = lines.to_vec();
    v.sort();
    v
}

/// The call log is `first`, then `middle` in any order, then `last`, and nothing else.
fn assert_phases(
    calls: &[String],
    first: &[String],
    middle: &[String],
    last: &[String],
    run: &Run,
) {
    let explain = || format!("call log: {calls:#?}\n{}", run.explain());
    assert_eq!(
        calls.len(),
        first.len() + middle.len() + last.len(),
        "{}",
        explain()
    );
    assert_eq!(&calls[..first.len()], first, "lock phase\n{}", explain());
    let mid = &calls[first.len()..first.len() + middle.len()];
    assert_eq!(sorted(mid), sorted(middle), "middle phase\n{}", explain());
    assert_eq!(
        &calls[first.len() + middle.len()..],
        last,
        "unlock phase\n{}",
        explain()
    );
}

/// The four jobs of the main scenario.
///
/// Backup order (`ghost` is not deployed): worker -> api -> db -> blobstore.
/// Restore order: db -> worker -> blobstore -> api.
/// Neither order is alphabetical nor its reverse, so a run that ignores the metadata (or
/// reads the wrong list) cannot pass by accident.
fn four_job_vm() -> Vm {
    let vm = Vm::with_identity("acme", "backend");
    full_job(&vm, "worker", &["api"], &["blobstore"]);
    full_job(&vm, "api", &["db", "ghost"], &[]);
    full_job(&vm, "db", &["blobstore"], &["worker", "ghost"]);
    full_job(&vm, "blobstore", &[], &["api"]);
    vm
}

const BACKUP_ORDER: [&str; 4] = ["worker", "api", "db", "blobstore"];
const RESTORE_ORDER: [&str; 4] = ["db", "worker", "blobstore", "api"];

fn reversed(order: &[&'static str]) -> Vec<&'static str> {
    order.iter().rev().copied().collect()
}

#[test]
fn backup_locks_in_metadata_order_and_unlocks_in_exact_reverse() {
    let vm = four_job_vm();
    let run = backup(&vm);
    run.assert_success();

    let unlocks: Vec<String> = reversed(&BACKUP_ORDER)
        .iter()
        .map(|j| format!("{j} post-backup-unlock true"))
        .collect();
    assert_phases(
        &vm.calls(),
        &lines(&BACKUP_ORDER, "pre-backup-lock"),
        &lines(&BACKUP_ORDER, "backup"),
        &unlocks,
        &run,
    );
    assert!(!vm.store().exists(), "{}", run.explain());
}

#[test]
fn restore_locks_in_restore_metadata_order_and_unlocks_in_exact_reverse() {
    let vm = four_job_vm();
    backup(&vm).assert_success();
    let artifact = vm.artifact_dir();
    fs::write(vm.log_path(), "").unwrap();

    let run = vm.agent(&["restore", "--artifact-path", artifact.to_str().unwrap()]);
    run.assert_success();
    assert_phases(
        &vm.calls(),
        &lines(&RESTORE_ORDER, "pre-restore-lock"),
        &lines(&RESTORE_ORDER, "restore"),
        &lines(&reversed(&RESTORE_ORDER), "post-restore-unlock"),
        &run,
    );
    assert!(!vm.store().exists(), "{}", run.explain());
}

#[test]
fn jobs_of_one_step_lock_after_the_previous_step_and_unlock_before_it() {
    // api before db and blobstore; db and blobstore before worker:
    // steps [api] [db, blobstore] [worker].
    let vm = Vm::with_identity("acme", "backend");
    full_job(&vm, "api", &["db", "blobstore"], &[]);
    full_job(&vm, "db", &["worker"], &[]);
    full_job(&vm, "blobstore", &["worker"], &[]);
    full_job(&vm, "worker", &[], &[]);
    let run = backup(&vm);
    run.assert_success();

    let calls = vm.calls();
    let explain = || format!("call log: {calls:#?}\n{}", run.explain());
    let steps: [&[&str]; 3] = [&["api"], &["db", "blobstore"], &["worker"]];
    let mut at = 0;
    for step in steps {
        let got = &calls[at..at + step.len()];
        assert_eq!(
            sorted(got),
            sorted(&lines(step, "pre-backup-lock")),
            "lock step {step:?}\n{}",
            explain()
        );
        at += step.len();
    }
    assert_eq!(
        sorted(&calls[at..at + 4]),
        sorted(&lines(&["api", "db", "blobstore", "worker"], "backup")),
        "backups after every lock\n{}",
        explain()
    );
    at += 4;
    for step in steps.iter().rev() {
        let wanted: Vec<String> = step
            .iter()
            .map(|j| format!("{j} post-backup-unlock true"))
            .collect();
        let got = &calls[at..at + step.len()];
        assert_eq!(
            sorted(got),
            sorted(&wanted),
            "unlock step {step:?}\n{}",
            explain()
        );
        at += step.len();
    }
    assert_eq!(at, calls.len(), "{}", explain());
}

#[test]
fn a_dependency_on_a_job_that_is_not_deployed_is_ignored() {
    // db's only declaration names a job that is not here; api is still locked before db.
    let vm = Vm::with_identity("acme", "backend");
    full_job(&vm, "db", &["ghost"], &["ghost"]);
    full_job(&vm, "api", &["db", "not-here-either"], &[]);
    let run = backup(&vm);
    run.assert_success();
    assert_phases(
        &vm.calls(),
        &lines(&["api", "db"], "pre-backup-lock"),
        &lines(&["api", "db"], "backup"),
        &[
            "db post-backup-unlock true".to_string(),
            "api post-backup-unlock true".to_string(),
        ],
        &run,
    );
}

/// The jobs named in the cycle error, in order: each piece of `... -> ...` names its job
/// as `backend/0 <job>`.
fn cycle_in(run: &Run) -> Vec<String> {
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains(" -> "))
        .unwrap_or_else(|| panic!("no `a -> b` cycle in stderr\n{}", run.explain()));
    line.split(" -> ")
        .map(|piece| {
            let mut words = piece.split_whitespace();
            words
                .by_ref()
                .find(|w| *w == "backend/0")
                .unwrap_or_else(|| panic!("{piece:?} does not name backend/0\n{}", run.explain()));
            words
                .next()
                .unwrap_or_else(|| panic!("{piece:?} names no job\n{}", run.explain()))
                .to_string()
        })
        .collect()
}

/// alpha -> bravo -> charlie -> alpha is a cycle; delta waits on alpha but is not in the
/// cycle; echo is free.
fn cyclic_vm() -> Vm {
    let vm = Vm::with_identity("acme", "backend");
    full_job(&vm, "alpha", &["bravo", "delta"], &[]);
    full_job(&vm, "bravo", &["charlie"], &[]);
    full_job(&vm, "charlie", &["alpha"], &[]);
    full_job(&vm, "delta", &[], &[]);
    full_job(&vm, "echo", &[], &[]);
    vm
}

fn assert_names_the_cycle(run: &Run, edges: &[(&str, &str)]) {
    let cycle = cycle_in(run);
    assert_eq!(
        cycle.len(),
        4,
        "three jobs and the first again: {cycle:?}\n{}",
        run.explain()
    );
    assert_eq!(
        cycle.first(),
        cycle.last(),
        "the cycle closes: {cycle:?}\n{}",
        run.explain()
    );
    let members: BTreeSet<&str> = cycle.iter().map(String::as_str).collect();
    assert_eq!(
        members,
        BTreeSet::from(["alpha", "bravo", "charlie"]),
        "every job of the cycle and no other: {cycle:?}\n{}",
        run.explain()
    );
    for pair in cycle.windows(2) {
        assert!(
            edges.contains(&(pair[0].as_str(), pair[1].as_str())),
            "`{} -> {}` is read as `{} is locked before {}`, which no metadata says: {cycle:?}\n{}",
            pair[0],
            pair[1],
            pair[0],
            pair[1],
            run.explain()
        );
    }
}

#[test]
fn a_cycle_fails_the_backup_before_anything_runs_and_names_every_job_of_it() {
    let vm = cyclic_vm();
    let run = backup(&vm);
    run.assert_code(1).assert_stderr_contains("cyclic");
    assert_names_the_cycle(
        &run,
        &[
            ("alpha", "bravo"),
            ("bravo", "charlie"),
            ("charlie", "alpha"),
        ],
    );
    assert!(
        vm.calls().is_empty(),
        "nothing may run: {:?}\n{}",
        vm.calls(),
        run.explain()
    );
    assert!(!vm.store().exists(), "no store is made\n{}", run.explain());
    assert_eq!(
        fs::read_dir(vm.artifacts()).unwrap().count(),
        0,
        "no artifact directory\n{}",
        run.explain()
    );
}

#[test]
fn a_two_job_cycle_is_named_both_ways() {
    let vm = Vm::with_identity("acme", "backend");
    full_job(&vm, "a", &["b"], &[]);
    full_job(&vm, "b", &["a"], &[]);
    let run = backup(&vm);
    run.assert_code(1);
    let cycle = cycle_in(&run);
    assert!(
        cycle == ["a", "b", "a"] || cycle == ["b", "a", "b"],
        "{cycle:?}\n{}",
        run.explain()
    );
    assert!(vm.calls().is_empty(), "{:?}", vm.calls());
}

#[test]
fn a_restore_side_cycle_fails_the_restore_before_any_restore_script() {
    let vm = Vm::with_identity("acme", "backend");
    full_job(&vm, "alpha", &[], &[]);
    full_job(&vm, "bravo", &[], &[]);
    full_job(&vm, "charlie", &[], &[]);
    full_job(&vm, "delta", &[], &[]);
    backup(&vm).assert_success();
    let artifact = vm.artifact_dir();
    fs::write(vm.log_path(), "").unwrap();
    // Now the restore order is cyclic (the backup order stays fine).
    vm.job("alpha")
        .metadata(&metadata(&[], &["bravo", "delta"]));
    vm.job("bravo").metadata(&metadata(&[], &["charlie"]));
    vm.job("charlie").metadata(&metadata(&[], &["alpha"]));

    let run = vm.agent(&["restore", "--artifact-path", artifact.to_str().unwrap()]);
    run.assert_code(1).assert_stderr_contains("cyclic");
    assert_names_the_cycle(
        &run,
        &[
            ("alpha", "bravo"),
            ("bravo", "charlie"),
            ("charlie", "alpha"),
        ],
    );
    assert!(
        vm.calls().is_empty(),
        "no restore-side script may run: {:?}\n{}",
        vm.calls(),
        run.explain()
    );
    assert!(!vm.store().exists(), "{}", run.explain());
}

/// BBR runs a VM's metadata scripts one after another; so does the agent. Each script holds
/// a lock directory while it runs and notes when it finds the lock taken.
#[test]
fn metadata_scripts_of_one_vm_never_overlap() {
    let vm = Vm::with_identity("acme", "db");
    let lock = vm.dir.path().join("metadata-running");
    let names = ["alpha", "beta", "gamma", "delta"];
    for name in names {
        vm.job(name).recording("backup").script(
            "metadata",
            &format!(
                "echo \"$ME start\" >> \"$LOG\"\n\
                 mkdir '{lock}' 2>/dev/null || echo \"$ME overlaps another\" >> \"$LOG\"\n\
                 sleep 0.2\n\
                 rmdir '{lock}' 2>/dev/null\n\
                 echo \"$ME end\" >> \"$LOG\"",
                lock = lock.display()
            ),
        );
    }
    let run = vm.agent(&["list"]);
    run.assert_success();
    let mut sorted_names = names;
    sorted_names.sort();
    let want: Vec<String> = sorted_names
        .iter()
        .flat_map(|n| [format!("{n} metadata start"), format!("{n} metadata end")])
        .collect();
    assert_eq!(
        vm.calls(),
        want,
        "each metadata script ends before the next starts\n{}",
        run.explain()
    );
}
