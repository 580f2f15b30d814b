//! No agent installed on the VMs: the driver brings its own over the SSH session it already
//! has (issue 15, docs/protocol.md "Bringing the agent"), through a real sshd. The VMs are
//! `--root` trees with no agent binary in them; each VM's bootstrap writes the brought binary
//! under its own `BBR_AGENT_TMP` (the VM's /var/vcap/data/tmp), and looks for an installed
//! agent at `BBR_AGENT_INSTALLED`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::fleet::{Fleet, Member};
use common::sshd::Sshd;
use common::{AGENT, Run, listing, tree, write_file};

const BRINGING: &str = "bringing this driver's";

/// The VM's /var/vcap/data/tmp, made empty.
fn data_tmp(m: &Member) -> PathBuf {
    let dir = m.vm.dir.path().join("data-tmp");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The session command through sshd: the bootstrap with the VM's temp directory and
/// installed-agent path, then the agent's arguments.
fn over_ssh(sshd: &Sshd, m: &Member, installed: &Path) -> String {
    sshd.ssh(&format!(
        "BBR_AGENT_INSTALLED={} BBR_AGENT_TMP={} {{{{ agent }}}} --root {} serve",
        installed.display(),
        data_tmp(m).display(),
        m.vm.root().display()
    ))
}

fn nowhere(m: &Member) -> PathBuf {
    m.vm.dir.path().join("no-agent-here")
}

/// `db/0` ... `db/{n-1}`, each with one job `db` whose locks are recorded and whose backup and
/// restore copy its data.
fn db_fleet(n: u32) -> Fleet {
    let mut fleet = Fleet::new();
    for i in 0..n {
        fleet
            .add("db", i)
            .job("db")
            .recording_locks()
            .copying_backup_restore();
    }
    fleet
}

/// Every VM's temp directory is empty: nothing brought is left.
fn assert_nothing_left(fleet: &Fleet, run: &Run) {
    for m in &fleet.members {
        let dir = m.vm.dir.path().join("data-tmp");
        let left: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert!(
            left.is_empty(),
            "{}/{}: the brought agent was left behind\n{}\n{}",
            m.group,
            m.index,
            listing(&dir),
            run.explain()
        );
    }
}

fn output(run: &Run) -> String {
    format!("{}{}", run.stdout, run.stderr)
}

/// An executable `sh` script at `path`.
fn script(path: &Path, body: &str) -> PathBuf {
    write_file(path, format!("#!/bin/sh\n{body}\n").as_bytes());
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

#[test]
fn a_round_trip_brings_the_agent_to_every_vm_and_leaves_nothing_behind() {
    let sshd = Sshd::start();
    let mut fleet = Fleet::new();
    for i in 0..2 {
        let db = fleet.add("db", i);
        db.job("db").recording_locks().copying_backup_restore();
        write_file(
            &db.data_dir("db").join("dump.sql"),
            format!("rows of db/{i}\n").as_bytes(),
        );
    }
    let inventory = fleet.inventory_with(|m| over_ssh(&sshd, m, &nowhere(m)));
    let before: Vec<_> = (0..2)
        .map(|i| tree(&fleet.vm("db", i).data_dir("db")))
        .collect();

    let sessions = sshd.sessions();
    let run = fleet.backup(&inventory, &[]);
    run.assert_success();
    assert_eq!(
        sshd.sessions() - sessions,
        2,
        "one session per VM, the transfer included\n{}",
        sshd.log()
    );
    for i in 0..2 {
        assert!(
            output(&run).contains(&format!("db/{i}: no bbr-agent of protocol")),
            "the transfer to db/{i} is said\n{}",
            run.explain()
        );
    }
    assert_nothing_left(&fleet, &run);

    for i in 0..2 {
        fs::remove_dir_all(fleet.vm("db", i).data_dir("db")).unwrap();
    }
    let artifact = fleet.artifact_dir();
    let sessions = sshd.sessions();
    let run = fleet.driver(
        &inventory,
        &["restore", "--artifact-path", artifact.to_str().unwrap()],
    );
    run.assert_success();
    assert_eq!(sshd.sessions() - sessions, 2, "{}", sshd.log());
    assert_nothing_left(&fleet, &run);
    for i in 0..2 {
        assert_eq!(
            tree(&fleet.vm("db", i).data_dir("db")),
            before[i as usize],
            "db/{i}"
        );
    }
}

/// Passes its stdin on to the command it runs, with the byte at OFFSET inverted.
const FLIPPER: &str = r#"#!/usr/bin/perl
use strict;
my $offset = shift;
pipe(my $r, my $w) or die "pipe: $!";
my $pid = fork() // die "fork: $!";
if ($pid == 0) { close $w; open(STDIN, "<&", $r) or die; exec @ARGV or die "exec: $!"; }
close $r;
my ($seen, $buf) = (0, "");
while (my $n = sysread(STDIN, $buf, 65536)) {
    if ($offset >= $seen && $offset < $seen + $n) {
        my $i = $offset - $seen;
        substr($buf, $i, 1) = chr(ord(substr($buf, $i, 1)) ^ 0xff);
    }
    syswrite($w, $buf) // last;
    $seen += $n;
}
close $w;
waitpid($pid, 0);
exit($? >> 8);
"#;

#[test]
fn a_transfer_changed_on_the_way_is_refused_before_any_lock() {
    let sshd = Sshd::start();
    let fleet = db_fleet(1);
    let flipper = fleet.dir.path().join("flipper");
    write_file(&flipper, FLIPPER.as_bytes());
    fs::set_permissions(&flipper, fs::Permissions::from_mode(0o755)).unwrap();
    // Past the script and the length line: inside the binary.
    let inventory = fleet.inventory_with(|m| {
        format!(
            "{} 100000 {}",
            flipper.display(),
            over_ssh(&sshd, m, &nowhere(m))
        )
    });

    let run = fleet.backup(&inventory, &[]);
    assert_ne!(run.code, Some(0), "{}", run.explain());
    run.assert_stderr_contains("db/0");
    run.assert_stderr_contains("the agent binary arrived changed");
    assert!(
        fleet.calls().is_empty(),
        "nothing ran: {:#?}\n{}",
        fleet.calls(),
        run.explain()
    );
    assert_nothing_left(&fleet, &run);
}

#[test]
fn an_installed_agent_of_this_protocol_is_used_and_one_of_another_is_not() {
    let sshd = Sshd::start();
    let fleet = db_fleet(2);
    let dir = fleet.dir.path().to_path_buf();
    // db/0: this very agent, installed; every start of it recorded.
    let same = script(
        &dir.join("db-0/bbr-agent"),
        &format!(
            "echo \"$*\" >> '{}'\nexec {AGENT} \"$@\"",
            dir.join("db-0.log").display()
        ),
    );
    // db/1: an agent that speaks protocol 999 (and fails if ever started for more).
    let other = script(
        &dir.join("db-1/bbr-agent"),
        &format!(
            "echo \"$*\" >> '{}'\n[ \"$1\" = protocol-version ] && echo 999 && exit 0\nexit 9",
            dir.join("db-1.log").display()
        ),
    );
    let inventory =
        fleet.inventory_with(|m| over_ssh(&sshd, m, if m.index == 0 { &same } else { &other }));

    let run = fleet.backup(&inventory, &[]);
    run.assert_success();
    let said = output(&run);
    assert!(!said.contains("db/0: no bbr-agent"), "{}", run.explain());
    assert!(
        said.contains("db/1: no bbr-agent of protocol"),
        "{}",
        run.explain()
    );
    assert_eq!(said.matches(BRINGING).count(), 1, "{}", run.explain());
    let log = |n| fs::read_to_string(dir.join(format!("db-{n}.log"))).unwrap_or_default();
    let root0 = fleet.vm("db", 0).root();
    assert_eq!(
        log(0),
        format!("protocol-version\n--root {} serve\n", root0.display()),
        "db/0 ran its installed agent"
    );
    assert_eq!(log(1), "protocol-version\n", "db/1's was asked, not run");
    assert_nothing_left(&fleet, &run);
}

#[test]
fn agent_installed_refuses_a_vm_without_one_naming_it_before_any_lock() {
    let sshd = Sshd::start();
    let fleet = db_fleet(2);
    let installed = script(
        &fleet.dir.path().join("installed/bbr-agent"),
        &format!("exec {AGENT} \"$@\""),
    );
    let inventory = fleet.inventory_with(|m| {
        let path = if m.index == 0 {
            installed.clone()
        } else {
            nowhere(m)
        };
        over_ssh(&sshd, m, &path)
    });

    let run = fleet.backup(&inventory, &["--agent", "installed"]);
    assert_ne!(run.code, Some(0), "{}", run.explain());
    run.assert_stderr_contains("error: db/1: cannot reach the agent");
    run.assert_stderr_contains(&format!(
        "there is no bbr-agent of protocol {} at {} on the VM, and --agent installed says not to bring one",
        bbr_agent::protocol::PROTOCOL_VERSION,
        nowhere(&fleet.members[1]).display()
    ));
    assert!(!output(&run).contains(BRINGING), "{}", run.explain());
    assert!(
        fleet.calls().iter().all(|c| !c.contains("lock")),
        "nothing locked: {:#?}\n{}",
        fleet.calls(),
        run.explain()
    );
    assert_nothing_left(&fleet, &run);
}

#[test]
fn a_dynamically_linked_agent_binary_is_refused_before_any_session() {
    let sshd = Sshd::start();
    let fleet = db_fleet(1);
    let dynamic = fleet.dir.path().join("bbr-agent-dynamic");
    fs::copy("/bin/true", &dynamic).unwrap();
    let inventory = fleet.inventory_with(|m| over_ssh(&sshd, m, &nowhere(m)));

    let sessions = sshd.sessions();
    let run = fleet.backup(
        &inventory,
        &[
            "--agent",
            "bring",
            "--agent-binary",
            dynamic.to_str().unwrap(),
        ],
    );
    assert_ne!(run.code, Some(0), "{}", run.explain());
    run.assert_stderr_contains(&format!(
        "the agent binary {} cannot be brought to the VMs: it is dynamically linked",
        dynamic.display()
    ));
    assert_eq!(
        sshd.sessions(),
        sessions,
        "no session started\n{}",
        sshd.log()
    );
    assert!(fleet.calls().is_empty(), "{:#?}", fleet.calls());
}

#[test]
fn agent_flags_on_commands_without_the_placeholder_say_they_do_nothing() {
    let fleet = db_fleet(1);
    let inventory = fleet.local_inventory();
    let run = fleet.backup(&inventory, &["--agent", "bring"]);
    run.assert_success();
    run.assert_stderr_contains(
        "warning: --agent and --agent-binary apply to commands with {{ agent }}, and no command of this run has it",
    );
    assert!(!output(&run).contains(BRINGING), "{}", run.explain());
}

/// A temp directory others may write to without the sticky bit (BOSH's own /tmp is root:vcap
/// 0770) would let any of them swap the brought binary between its check and its start: the
/// bootstrap refuses it before a byte is sent, naming it, and nothing is locked.
#[test]
fn a_temp_directory_others_may_write_without_the_sticky_bit_is_refused_before_the_transfer() {
    let sshd = Sshd::start();
    let fleet = db_fleet(1);
    let inventory = fleet.inventory_with(|m| over_ssh(&sshd, m, &nowhere(m)));
    let tmp = data_tmp(&fleet.members[0]);
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o777)).unwrap();
    let run = fleet.backup(&inventory, &[]);
    assert_ne!(run.code, Some(0), "{}", run.explain());
    run.assert_stderr_contains(&format!("{} is not a safe directory", tmp.display()));
    assert!(
        fleet.calls().iter().all(|c| !c.contains("lock")),
        "nothing locked: {:#?}\n{}",
        fleet.calls(),
        run.explain()
    );
    assert_nothing_left(&fleet, &run);
    // Sticky, as /tmp is on most systems: taken.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
    fleet.backup(&inventory, &[]).assert_success();
}

/// A brought agent that stops at its command line (a flag of another version): it removed
/// itself before reading it, so nothing is left on the VM.
#[test]
fn a_brought_agent_that_refuses_its_command_line_leaves_nothing_behind() {
    let sshd = Sshd::start();
    let fleet = db_fleet(1);
    let inventory = fleet.inventory_with(|m| {
        sshd.ssh(&format!(
            "BBR_AGENT_INSTALLED={} BBR_AGENT_TMP={} {{{{ agent }}}} --no-such-flag --root {} serve",
            nowhere(m).display(),
            data_tmp(m).display(),
            m.vm.root().display()
        ))
    });
    let run = fleet.backup(&inventory, &[]);
    assert_ne!(run.code, Some(0), "{}", run.explain());
    assert!(fleet.calls().is_empty(), "{:#?}", fleet.calls());
    assert_nothing_left(&fleet, &run);
}

/// `--agent auto` with a binary that cannot be brought (dynamically linked): the VMs with an
/// installed agent still run, and only a VM without one is refused, naming why and what to do.
#[test]
fn auto_with_a_binary_that_cannot_be_brought_still_runs_where_the_agent_is_installed() {
    let sshd = Sshd::start();
    let fleet = db_fleet(2);
    let dynamic = fleet.dir.path().join("bbr-agent-dynamic");
    fs::copy("/bin/true", &dynamic).unwrap();
    let installed = script(
        &fleet.dir.path().join("installed/bbr-agent"),
        &format!("exec {AGENT} \"$@\""),
    );
    let auto = ["--agent-binary", dynamic.to_str().unwrap()];

    let everywhere = fleet.inventory_with(|m| over_ssh(&sshd, m, &installed));
    fleet.backup(&everywhere, &auto).assert_success();

    let one_without = fleet.inventory_with(|m| {
        let path = if m.index == 0 {
            installed.clone()
        } else {
            nowhere(m)
        };
        over_ssh(&sshd, m, &path)
    });
    let calls = fleet.calls();
    let run = fleet.backup(&one_without, &auto);
    assert_ne!(run.code, Some(0), "{}", run.explain());
    run.assert_stderr_contains("db/1: ").assert_stderr_contains(
        "the VM has no bbr-agent of this protocol and this driver cannot bring its own",
    );
    assert_eq!(fleet.calls(), calls, "nothing locked\n{}", run.explain());
    assert_nothing_left(&fleet, &run);
}
