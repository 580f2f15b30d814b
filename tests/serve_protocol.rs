//! `bbr-agent serve` spoken to directly: garbage and truncated input get an error or a clean
//! exit, never a panic or a hang; and when the driver goes away, what was locked is unlocked.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{AGENT, Vm};
use serde_json::{Value, json};

/// Runs `serve` on `vm` with `input` as its whole stdin; returns its exit code and the
/// messages it wrote. Fails the test if it takes more than 20 s (a hang).
fn serve(vm: &Vm, input: &[u8]) -> (Option<i32>, Vec<Value>, String) {
    let mut child = Command::new(AGENT)
        .arg("--root")
        .arg(vm.root())
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // serve may stop reading early (a broken frame); a broken pipe here is expected then.
    let _ = stdin.write_all(input);
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("serve hung on input {:?}", String::from_utf8_lossy(input));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "serve panicked:\n{stderr}");
    let messages = BufReader::new(&out.stdout[..])
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("serve writes only JSON lines here"))
        .collect();
    (out.status.code(), messages, stderr)
}

/// An interactive session: requests go one at a time, each answered before the next, and the
/// input stays open until the test closes it (closing it means "the driver has gone").
struct Session {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Session {
    fn start(vm: &Vm) -> Session {
        let mut child = Command::new(AGENT)
            .args(["--root", vm.root().to_str().unwrap(), "serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Session {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
        }
    }

    /// Sends one request line and returns every message up to its answer.
    fn call(&mut self, request: &str) -> Vec<Value> {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(request.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        self.answer()
    }

    /// Every message up to the answer of the request sent.
    fn answer(&mut self) -> Vec<Value> {
        let mut messages = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "serve ended: {messages:#?}"
            );
            let m: Value = serde_json::from_str(&line).unwrap();
            let done = m["type"] == "ok" || m["type"] == "error";
            messages.push(m);
            if done {
                return messages;
            }
        }
    }

    /// Closes the input, as a vanished driver does, and waits for the exit code.
    fn hang_up(mut self) -> Option<i32> {
        drop(self.stdin.take());
        self.child.wait().unwrap().code()
    }
}

fn hello(id: u64) -> String {
    json!({"id": id, "op": "hello", "protocol": 2, "deployment": "acme",
           "instance": {"group": "backend", "index": "0"},
           "settings": {"script_timeout_ms": null, "kill_grace_ms": 1000, "bbr_version": "1.9.73"}})
    .to_string()
}

fn line(v: Value) -> String {
    v.to_string()
}

#[test]
fn garbage_lines_get_bad_request_and_the_session_goes_on() {
    let vm = Vm::new();
    vm.job("j").recording("pre-backup-lock");
    let input = format!(
        "not json\n{}\n{}\n{{\"id\":3,\"op\":\"fly\"}}\n[1,2]\n{}\n",
        line(json!({"id": 1, "op": "describe"})),
        hello(2),
        line(json!({"id": 4, "op": "describe"}))
    );
    let (code, messages, stderr) = serve(&vm, input.as_bytes());
    assert_eq!(code, Some(0), "{messages:#?}\n{stderr}");
    let kinds: Vec<(Value, Value, Value)> = messages
        .iter()
        .map(|m| (m["type"].clone(), m["id"].clone(), m["code"].clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (json!("error"), Value::Null, json!("bad_request")),
            (json!("error"), json!(1), json!("not_ready")),
            (json!("ok"), json!(2), Value::Null),
            (json!("error"), json!(3), json!("bad_request")),
            (json!("error"), Value::Null, json!("bad_request")),
            (json!("ok"), json!(4), Value::Null),
        ],
        "{messages:#?}"
    );
    assert_eq!(messages[5]["result"]["jobs"][0]["name"], "j");
}

#[test]
fn truncated_and_oversized_input_ends_the_session_cleanly() {
    let vm = Vm::new();
    // A request cut off mid-line: nothing to answer, a clean exit.
    let (code, messages, _) = serve(&vm, &hello(1).as_bytes()[..20]);
    assert_eq!((code, messages.len()), (Some(0), 0));

    // A line over the 4 MiB limit: too_long, then a non-zero exit.
    let mut huge = vec![b'x'; 5 << 20];
    huge.push(b'\n');
    let (code, messages, _) = serve(&vm, &huge);
    assert_eq!(code, Some(1));
    assert_eq!(messages.last().unwrap()["code"], "too_long");

    // receive_artifact whose data is truncated mid-chunk.
    let mut input = format!(
        "{}\n{}\n",
        hello(1),
        line(json!({"id": 2, "op": "receive_artifact", "job": "j", "checksums": {}}))
    )
    .into_bytes();
    input.extend_from_slice(&[0, 0, 0, 100, 1, 2, 3]);
    let (code, messages, _) = serve(&vm, &input);
    assert_eq!(code, Some(1), "{messages:#?}");
    // And a chunk that claims more than 1 MiB.
    let mut input = format!(
        "{}\n{}\n",
        hello(1),
        line(json!({"id": 2, "op": "receive_artifact", "job": "j", "checksums": {}}))
    )
    .into_bytes();
    input.extend_from_slice(&(64u32 << 20).to_be_bytes());
    let (code, messages, _) = serve(&vm, &input);
    assert_eq!(code, Some(1), "{messages:#?}");
    assert!(
        messages.iter().any(|m| m["code"] == "too_long"),
        "{messages:#?}"
    );
}

#[test]
fn a_wrong_protocol_version_is_refused() {
    let vm = Vm::new();
    let mut request: Value = serde_json::from_str(&hello(1)).unwrap();
    // A driver of version 1: the agent names its own version and what to do.
    request["protocol"] = json!(1);
    let (_, messages, _) = serve(&vm, format!("{request}\n").as_bytes());
    assert_eq!(messages[0]["code"], "protocol_mismatch", "{messages:#?}");
    assert!(
        messages[0]["message"]
            .as_str()
            .unwrap()
            .contains("protocol 2, the driver 1"),
        "{messages:#?}"
    );
}

#[test]
fn when_the_driver_goes_away_the_locked_jobs_are_unlocked_in_reverse_and_the_store_removed() {
    let vm = Vm::new();
    vm.job("first")
        .recording_locks()
        .metadata("backup_should_be_locked_before:\n- {job_name: second, release: r}");
    vm.job("second").recording_locks().script(
        "post-backup-unlock",
        "echo \"$ME $BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL\" >> \"$LOG\"",
    );
    let run = |id: u64, job: &str| {
        line(
            json!({"id": id, "op": "run_scripts", "script": "pre-backup-lock", "jobs": [job],
                    "parallel": true, "after_backup_successful": null}),
        )
    };
    let mut session = Session::start(&vm);
    for request in [
        hello(1),
        line(json!({"id": 2, "op": "describe"})),
        line(json!({"id": 3, "op": "create_store"})),
        run(4, "first"),
        run(5, "second"),
    ] {
        let answer = session.call(&request);
        assert_eq!(
            answer.last().unwrap()["type"],
            "ok",
            "{request}: {answer:#?}"
        );
    }
    assert!(vm.store().exists());
    let code = session.hang_up();
    assert_eq!(code, Some(1), "it held locks when its input ended");
    assert_eq!(
        vm.calls(),
        [
            "first pre-backup-lock",
            "second pre-backup-lock",
            "second post-backup-unlock false",
            "first post-backup-unlock",
        ]
    );
    assert!(!vm.store().exists(), "the store it made is removed");
}

#[test]
fn an_artifact_goes_out_as_raw_chunks_with_its_checksums() {
    let vm = Vm::new();
    vm.job("j").script(
        "backup",
        "printf 'hello' > \"$BBR_ARTIFACT_DIRECTORY/greeting\"",
    );
    let mut session = Session::start(&vm);
    for request in [
        hello(1),
        line(json!({"id": 2, "op": "describe"})),
        line(json!({"id": 3, "op": "create_store"})),
        line(
            json!({"id": 4, "op": "run_scripts", "script": "backup", "jobs": ["j"], "parallel": true, "after_backup_successful": null}),
        ),
    ] {
        let answer = session.call(&request);
        assert_eq!(
            answer.last().unwrap()["type"],
            "ok",
            "{request}: {answer:#?}"
        );
    }
    // The answer to send_artifact: a data message, raw chunks to a zero-length one, the result.
    let (header, data, result) = send_artifact(
        &mut session,
        json!({"id": 5, "op": "send_artifact", "job": "j"}),
    );
    // Its length, measured after the backup script, is announced before the first byte.
    assert_eq!(header["size"], json!(data.len()), "{header}");
    assert_eq!(result["id"], 5);
    assert_eq!(
        result["result"]["checksums"]["./greeting"],
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    let mut archive = tar::Archive::new(&data[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["./", "./greeting"]);
    let answer = session.call(&line(json!({"id": 6, "op": "remove_store"})));
    assert_eq!(answer[0]["type"], "ok");
    assert_eq!(session.hang_up(), Some(0), "nothing held: a clean exit");
    assert!(!vm.store().exists());
}

/// Sends a `send_artifact` request; returns the data message, the data, and the answer.
fn send_artifact(session: &mut Session, request: Value) -> (Value, Vec<u8>, Value) {
    let id = request["id"].clone();
    let stdin = session.stdin.as_mut().unwrap();
    writeln!(stdin, "{request}").unwrap();
    let mut header = String::new();
    session.stdout.read_line(&mut header).unwrap();
    let header: Value = serde_json::from_str(&header).unwrap();
    assert_eq!(
        (&header["type"], &header["id"]),
        (&json!("data"), &id),
        "{header}"
    );
    let mut data = Vec::new();
    loop {
        let mut len = [0u8; 4];
        std::io::Read::read_exact(&mut session.stdout, &mut len).unwrap();
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            break;
        }
        let mut chunk = vec![0u8; len];
        std::io::Read::read_exact(&mut session.stdout, &mut chunk).unwrap();
        data.extend_from_slice(&chunk);
    }
    let mut result = String::new();
    session.stdout.read_line(&mut result).unwrap();
    (header, data, serde_json::from_str(&result).unwrap())
}

/// Asked to compress (`compression` in send_artifact), the agent sends a zstd stream of the
/// same tar, with the files' checksums; its hello lists the codec so a driver knows it may
/// ask. A level out of range is refused before any data.
#[test]
fn an_artifact_asked_compressed_goes_out_as_a_zstd_stream_of_the_tar() {
    let vm = Vm::new();
    vm.job("j").script(
        "backup",
        "for i in $(seq 1 2000); do echo \"INSERT INTO t VALUES ($i, 'some text');\"; done > \"$BBR_ARTIFACT_DIRECTORY/dump.sql\"",
    );
    let mut session = Session::start(&vm);
    let answer = session.call(&hello(1));
    assert_eq!(
        answer[0]["result"]["codecs"],
        json!(["zstd"]),
        "{answer:#?}"
    );
    for request in [
        line(json!({"id": 2, "op": "describe"})),
        line(json!({"id": 3, "op": "create_store"})),
        line(
            json!({"id": 4, "op": "run_scripts", "script": "backup", "jobs": ["j"], "parallel": true, "after_backup_successful": null}),
        ),
    ] {
        let answer = session.call(&request);
        assert_eq!(
            answer.last().unwrap()["type"],
            "ok",
            "{request}: {answer:#?}"
        );
    }
    let refused = session.call(&line(
        json!({"id": 5, "op": "send_artifact", "job": "j", "compression": {"codec": "zstd", "level": 40}}),
    ));
    assert_eq!(refused.len(), 1, "no data before the refusal: {refused:#?}");
    assert!(
        refused[0]["message"]
            .as_str()
            .unwrap()
            .contains("zstd level 40 is out of range"),
        "{refused:#?}"
    );
    let (header, packed, result) = send_artifact(
        &mut session,
        json!({"id": 6, "op": "send_artifact", "job": "j", "compression": {"codec": "zstd", "level": 3}}),
    );
    // The size announced is the plain tar's, which this stream is not: none is.
    assert_eq!(header.get("size"), None, "{header}");
    let data = zstd::decode_all(&packed[..]).expect("a zstd stream");
    assert!(
        packed.len() * 4 < data.len(),
        "{} of {}",
        packed.len(),
        data.len()
    );
    let mut archive = tar::Archive::new(&data[..]);
    let mut dump = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().ends_with("dump.sql") {
            std::io::Read::read_to_end(&mut entry, &mut dump).unwrap();
        }
    }
    use sha2::Digest;
    let sum: String = sha2::Sha256::digest(&dump)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        result["result"]["checksums"]["./dump.sql"],
        json!(sum),
        "{result}"
    );
    assert!(dump.starts_with(b"INSERT INTO t VALUES (1, "));
    let answer = session.call(&line(json!({"id": 7, "op": "remove_store"})));
    assert_eq!(answer[0]["type"], "ok");
    assert_eq!(session.hang_up(), Some(0));
}

/// A driver that stops reading (an SSH connection that stalls but does not drop) does not
/// stop the agent from ending a script at its timeout: a lock script that prints without end
/// is ended on time although none of its output can be delivered.
#[test]
fn a_stalled_driver_does_not_hold_off_a_scripts_timeout() {
    let vm = Vm::with_identity("acme", "backend");
    let pid_file = vm.dir.path().join("chatty.pid");
    vm.job("chatty").script(
        "pre-backup-lock",
        &format!(
            "echo $$ > '{}'\nwhile :; do echo 'a line of output that nobody reads'; done",
            pid_file.display()
        ),
    );
    let mut child = Command::new(AGENT)
        .args(["--root", vm.root().to_str().unwrap(), "serve"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut settings: Value = serde_json::from_str(&hello(1)).unwrap();
    settings["settings"]["timeouts_ms"] = json!({"pre-backup-lock": 1000});
    settings["settings"]["kill_grace_ms"] = json!(0);
    for request in [
        settings.to_string(),
        line(json!({"id": 2, "op": "describe"})),
        line(json!({"id": 3, "op": "create_store"})),
        line(
            json!({"id": 4, "op": "run_scripts", "script": "pre-backup-lock",
                    "jobs": ["chatty"], "parallel": true, "after_backup_successful": null}),
        ),
    ] {
        stdin.write_all(request.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
    }
    stdin.flush().unwrap();
    // Nobody reads the agent's stdout from here on.
    let alive = |pid: i32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let started = Instant::now();
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            break pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the script never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let deadline = Instant::now() + Duration::from_secs(8);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let still_alive = alive(pid);
    if still_alive && pid > 1 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !still_alive,
        "the script ran on past its 1 s timeout while the driver did not read"
    );
}

fn journal(vm: &Vm) -> std::path::PathBuf {
    vm.root().join("var/vcap/sys/run/bbr-agent/journal.jsonl")
}

fn run_scripts(id: u64, script: &str, job: &str) -> String {
    line(
        json!({"id": id, "op": "run_scripts", "script": script, "jobs": [job],
                "parallel": true, "after_backup_successful": null}),
    )
}

/// Sends each request and checks it was answered `ok`.
fn all_ok(session: &mut Session, requests: &[String]) {
    for request in requests {
        let answer = session.call(request);
        assert_eq!(
            answer.last().unwrap()["type"],
            "ok",
            "{request}: {answer:#?}"
        );
    }
}

/// A second `hello` after a lock is refused and changes nothing: the lock is still the
/// session's, and is released when the session ends. Before, it swapped the instance for a
/// new one, which "unlocked" the job at the end without running its unlock script and erased
/// the journal: the job stayed locked, and nothing on the VM said so.
#[test]
fn a_second_hello_is_refused_and_the_lock_before_it_is_still_released_at_the_end() {
    let vm = Vm::new();
    vm.job("j").recording_locks();
    let mut session = Session::start(&vm);
    all_ok(
        &mut session,
        &[
            hello(1),
            line(json!({"id": 2, "op": "describe"})),
            run_scripts(3, "pre-backup-lock", "j"),
        ],
    );
    let answer = session.call(&hello(4));
    assert_eq!(answer.last().unwrap()["type"], "error", "{answer:#?}");
    assert_eq!(answer.last().unwrap()["code"], "bad_request", "{answer:#?}");
    assert!(journal(&vm).exists(), "the lock is still recorded");
    assert_eq!(
        session.hang_up(),
        Some(1),
        "it held a lock when its input ended"
    );
    assert_eq!(vm.calls(), ["j pre-backup-lock", "j post-backup-unlock"]);
    assert!(!journal(&vm).exists(), "released by its own unlock");
}

/// An unlock of the other side (`post-backup-unlock` after `pre-restore-lock`) runs, but does
/// not release the restore lock: the journal keeps it, and the session's end runs
/// `post-restore-unlock`. Before, any unlock released the job, so the restore lock was never
/// released.
#[test]
fn an_unlock_of_the_other_side_does_not_release_a_lock() {
    let vm = Vm::new();
    vm.job("j").recording_locks();
    let mut session = Session::start(&vm);
    all_ok(
        &mut session,
        &[
            hello(1),
            line(json!({"id": 2, "op": "describe"})),
            run_scripts(3, "pre-restore-lock", "j"),
            run_scripts(4, "post-backup-unlock", "j"),
        ],
    );
    let recorded = std::fs::read_to_string(journal(&vm)).unwrap_or_default();
    assert!(
        recorded.contains("pre-restore-lock"),
        "the restore lock is still recorded: {recorded:?}"
    );
    assert_eq!(
        session.hang_up(),
        Some(1),
        "it held a lock when its input ended"
    );
    assert_eq!(
        vm.calls(),
        [
            "j pre-restore-lock",
            "j post-backup-unlock",
            "j post-restore-unlock"
        ]
    );
    assert!(!journal(&vm).exists());
}

/// `send_artifact` sends only a job of this VM that has a backup script: `../../x` is refused
/// before any data, with an error naming it, and nothing outside the store goes out. Before,
/// it tarred whatever directory the name led to.
#[test]
fn send_artifact_refuses_a_name_that_is_not_a_job_with_a_backup_script() {
    let vm = Vm::new();
    vm.job("j")
        .script("backup", "echo data > \"$BBR_ARTIFACT_DIRECTORY/f\"");
    vm.job("nobackup").recording("pre-backup-lock");
    // <dir>/secret: five levels up from the store <dir>/vm/var/vcap/store/bbr-backup.
    common::write_file(&vm.dir.path().join("secret/key"), b"not yours");
    let mut session = Session::start(&vm);
    all_ok(
        &mut session,
        &[
            hello(1),
            line(json!({"id": 2, "op": "describe"})),
            line(json!({"id": 3, "op": "create_store"})),
        ],
    );
    for (id, job) in [
        (4, "../../../../../secret"),
        (5, "nobackup"),
        (6, "nosuchjob"),
    ] {
        let stdin = session.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "{}",
            json!({"id": id, "op": "send_artifact", "job": job})
        )
        .unwrap();
        let mut first = String::new();
        session.stdout.read_line(&mut first).unwrap();
        let answer: Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("{job}: not a JSON line first ({e}): {first:?}"));
        assert_eq!(answer["type"], "error", "{job}: {answer}");
        assert_eq!(answer["id"], id, "{answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains(&format!("'{job}'")),
            "names the job: {answer}"
        );
    }
    all_ok(
        &mut session,
        &[line(json!({"id": 7, "op": "remove_store"}))],
    );
    assert_eq!(session.hang_up(), Some(0));
}

/// A backup script run without `create_store` (as by a driver that skipped it): the store
/// is made as `create_store` makes it, root only (0700), and the session that made it removes
/// it at its end. Before, it was made 0755 and left behind after `bye`.
#[test]
fn a_store_made_for_a_backup_script_is_0700_and_removed_by_its_session() {
    use std::os::unix::fs::PermissionsExt;
    let vm = Vm::new();
    vm.job("j")
        .script("backup", "echo data > \"$BBR_ARTIFACT_DIRECTORY/f\"");
    let mut session = Session::start(&vm);
    all_ok(
        &mut session,
        &[
            hello(1),
            line(json!({"id": 2, "op": "describe"})),
            run_scripts(3, "backup", "j"),
        ],
    );
    let mode = std::fs::metadata(vm.store()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "the store's mode is {mode:o}");
    all_ok(&mut session, &[line(json!({"id": 4, "op": "bye"}))]);
    session.hang_up();
    assert!(
        !vm.store().exists(),
        "the session that made the store removed it"
    );
}

/// The peak memory (VmHWM) of a live process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"))
}

/// A script printing 64 MiB without a newline and without valid UTF-8 (each byte becomes a
/// 3-byte U+FFFD on the way out) while the driver reads nothing: the output queue is bounded
/// by bytes, not lines, so the agent's peak memory stays far below the output's size. Before,
/// 4,096 queued lines of 64 KiB (192 KiB once made UTF-8) each let it grow to the whole
/// output, over 200 MiB here.
#[test]
fn output_the_driver_does_not_read_is_bounded_in_bytes() {
    let vm = Vm::new();
    let done = vm.dir.path().join("flood.done");
    vm.job("flood").script(
        "pre-backup-lock",
        &format!(
            "head -c 67108864 /dev/zero | tr '\\000' '\\377'\ntouch '{}'",
            done.display()
        ),
    );
    let mut child = Command::new(AGENT)
        .args(["--root", vm.root().to_str().unwrap(), "serve"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for request in [
        hello(1),
        line(json!({"id": 2, "op": "describe"})),
        run_scripts(3, "pre-backup-lock", "flood"),
    ] {
        writeln!(stdin, "{request}").unwrap();
    }
    stdin.flush().unwrap();
    // Nobody reads the agent's stdout from here on.
    let started = Instant::now();
    while !done.exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The script wrote its last bytes; give the agent a moment to take them in.
    std::thread::sleep(Duration::from_millis(500));
    let peak = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(done.exists(), "the script never finished its output");
    assert!(
        peak < 64 * 1024,
        "the agent's peak memory was {} MiB for 64 MiB of output nobody read",
        peak / 1024
    );
}

/// The driver's cleanup command in `hello` is what a later run names after this session's
/// agent was killed with a job locked (a director run's here: its flags, no secret); a value
/// that is not one line of a `bbr-agent` command is not taken, and the VM-local cleanup is
/// named instead.
#[test]
fn the_drivers_cleanup_command_is_named_after_a_killed_session_and_a_hostile_one_is_not() {
    let director =
        "bbr-agent deployment --target https://10.0.0.6:25555 --username bbr --deployment acme";
    for (given, named) in [
        (
            director.to_string(),
            format!("run `{director} backup-cleanup` first"),
        ),
        (
            "touch /tmp/pwned; bbr-agent".to_string(),
            "backup-cleanup` first".to_string(),
        ),
    ] {
        let vm = Vm::with_identity("acme", "backend");
        vm.job("j").recording_locks().copying_backup_restore();
        let mut session = Session::start(&vm);
        let mut hello: Value = serde_json::from_str(&hello(1)).unwrap();
        hello["cleanup_via"] = json!(given);
        all_ok(
            &mut session,
            &[
                hello.to_string(),
                line(json!({"id": 2, "op": "describe"})),
                line(json!({"id": 3, "op": "begin"})),
                run_scripts(4, "pre-backup-lock", "j"),
            ],
        );
        session.child.kill().unwrap();
        session.child.wait().unwrap();
        let refused = vm.agent(&[
            "backup",
            "--artifact-path",
            vm.artifacts().to_str().unwrap(),
        ]);
        refused
            .assert_code(1)
            .assert_stderr_contains("a run that was killed")
            .assert_stderr_contains(&named);
        assert!(
            !refused.stderr.contains("pwned"),
            "a hostile cleanup command was shown\n{}",
            refused.explain()
        );
    }
}

/// Each script of an all-at-once step says when it ends (`script_ended`, before the step's
/// answer; the last to end is told by the answer) to a driver whose `hello` asked for it, and
/// to no other: a driver that does not know the message never gets one.
#[test]
fn script_ended_goes_only_to_a_driver_that_asked_for_it() {
    let vm = Vm::with_identity("acme", "backend");
    for job in ["a", "b"] {
        vm.job(job)
            .script("pre-backup-lock", "true")
            .script("post-backup-unlock", "true");
    }
    let lock = line(
        json!({"id": 3, "op": "run_scripts", "script": "pre-backup-lock",
        "jobs": ["a", "b"], "parallel": true, "after_backup_successful": null}),
    );
    let unlock = line(
        json!({"id": 4, "op": "run_scripts", "script": "post-backup-unlock",
        "jobs": ["a", "b"], "parallel": true, "after_backup_successful": true}),
    );
    for asked in [false, true] {
        let mut hello: Value = serde_json::from_str(&hello(1)).unwrap();
        if asked {
            hello["events"] = json!(["script_ended", "some_later_event"]);
        }
        let mut session = Session::start(&vm);
        all_ok(
            &mut session,
            &[hello.to_string(), line(json!({"id": 2, "op": "describe"}))],
        );
        let answer = session.call(&lock);
        assert_eq!(answer.last().unwrap()["type"], "ok", "{answer:#?}");
        let mut ended: Vec<String> = answer
            .iter()
            .filter(|m| m["type"] == "script_ended")
            .map(|m| {
                assert_eq!(m["id"], 3, "{m}");
                assert_eq!(m["script"], "pre-backup-lock", "{m}");
                m["job"].as_str().unwrap().to_string()
            })
            .collect();
        ended.sort();
        match asked {
            // The last to end is told by the answer itself.
            true => assert!(ended == ["a"] || ended == ["b"], "{answer:#?}"),
            false => assert!(ended.is_empty(), "{answer:#?}"),
        }
        all_ok(&mut session, std::slice::from_ref(&unlock));
        assert_eq!(session.hang_up(), Some(0));
    }
}

/// Sends a `receive_artifact` request and `data` as chunks; returns the messages up to its
/// answer.
fn receive_artifact(session: &mut Session, request: Value, data: &[u8]) -> Vec<Value> {
    let stdin = session.stdin.as_mut().unwrap();
    writeln!(stdin, "{request}").unwrap();
    for chunk in data.chunks(1000) {
        stdin
            .write_all(&(chunk.len() as u32).to_be_bytes())
            .unwrap();
        stdin.write_all(chunk).unwrap();
    }
    stdin.write_all(&0u32.to_be_bytes()).unwrap();
    stdin.flush().unwrap();
    session.answer()
}

/// The agent's hello says it takes BLAKE3: asked, it gives the BLAKE3 of the files it sends,
/// and an artifact received with `digest: blake3` is checked against those digests: the right
/// ones put it in the store, SHA-256 values given as BLAKE3 (or a changed file) are refused and
/// leave nothing. Without the field the checksums are SHA-256, as older drivers send them.
#[test]
fn an_agent_gives_and_checks_blake3_digests_when_asked() {
    let vm = Vm::new();
    vm.job("j")
        .script(
            "backup",
            "printf 'hello' > \"$BBR_ARTIFACT_DIRECTORY/greeting\"",
        )
        .script("restore", "true");
    let mut session = Session::start(&vm);
    let answer = session.call(&hello(1));
    assert_eq!(
        answer[0]["result"]["digests"],
        json!(["blake3"]),
        "{answer:#?}"
    );
    all_ok(
        &mut session,
        &[
            line(json!({"id": 2, "op": "describe"})),
            line(json!({"id": 3, "op": "create_store"})),
            line(
                json!({"id": 4, "op": "run_scripts", "script": "backup", "jobs": ["j"], "parallel": true, "after_backup_successful": null}),
            ),
        ],
    );
    let (_, tar, sent) = send_artifact(
        &mut session,
        json!({"id": 5, "op": "send_artifact", "job": "j"}),
    );
    let sha256 = sent["result"]["checksums"].clone();
    let blake3 = json!({"./greeting": blake3::hash(b"hello").to_hex().to_string()});
    assert_ne!(blake3, sha256);
    // Asked for BLAKE3, the agent sends the same tar with its files' BLAKE3.
    let (_, same, sent) = send_artifact(
        &mut session,
        json!({"id": 6, "op": "send_artifact", "job": "j", "digest": "blake3"}),
    );
    assert_eq!(same, tar);
    assert_eq!(sent["result"]["checksums"], blake3, "{sent:#}");
    all_ok(
        &mut session,
        &[line(json!({"id": 7, "op": "remove_store"}))],
    );
    let greeting = vm.store().join("j").join("greeting");
    let mut id = 8;
    let mut receive = |session: &mut Session, fields: Value, data: &[u8]| {
        id += 1;
        all_ok(session, &[line(json!({"id": id, "op": "create_store"}))]);
        id += 1;
        let mut request = json!({"id": id, "op": "receive_artifact", "job": "j"});
        request
            .as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let answer = receive_artifact(session, request, data);
        let received = std::fs::read(&greeting).ok();
        id += 1;
        all_ok(session, &[line(json!({"id": id, "op": "remove_store"}))]);
        (answer.last().unwrap().clone(), received)
    };
    let (answer, received) = receive(
        &mut session,
        json!({"checksums": blake3, "digest": "blake3"}),
        &tar,
    );
    assert_eq!(answer["type"], "ok", "{answer:#}");
    assert_eq!(received.as_deref(), Some(&b"hello"[..]));
    let (answer, received) = receive(
        &mut session,
        json!({"checksums": sha256, "digest": "blake3"}),
        &tar,
    );
    assert_eq!(
        answer["type"], "error",
        "SHA-256 values are not BLAKE3: {answer:#}"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("wrong checksums (BLAKE3: content differs: ./greeting)"),
        "{answer:#}"
    );
    assert_eq!(received, None, "nothing refused reaches the store");
    // The same length, one byte changed: its BLAKE3 differs.
    let at = tar.windows(5).position(|w| w == b"hello").unwrap();
    let mut changed = tar.clone();
    changed[at] = b'j';
    let (answer, received) = receive(
        &mut session,
        json!({"checksums": blake3, "digest": "blake3"}),
        &changed,
    );
    assert_eq!(answer["type"], "error", "{answer:#}");
    assert_eq!(received, None);
    let (answer, received) = receive(&mut session, json!({"checksums": sha256}), &tar);
    assert_eq!(
        answer["type"], "ok",
        "without `digest`, SHA-256: {answer:#}"
    );
    assert_eq!(received.as_deref(), Some(&b"hello"[..]));
    assert_eq!(session.hang_up(), Some(0));
}

/// A session the driver ends with `bye` and then closes is a clean end: the VM's log says
/// nothing of a driver that went away (before, every session's last line was that warning,
/// "ending running scripts, then unlocking what is locked", after a backup that went well).
/// A driver that hangs up without `bye` is still logged as gone.
#[test]
fn a_session_ended_by_bye_is_not_logged_as_a_driver_gone() {
    let vm = Vm::new();
    vm.job("j")
        .script("pre-backup-lock", "exit 0")
        .script("post-backup-unlock", "exit 0");
    let mut session = Session::start(&vm);
    all_ok(
        &mut session,
        &[
            hello(1),
            line(json!({"id": 2, "op": "describe"})),
            run_scripts(3, "pre-backup-lock", "j"),
            run_scripts(4, "post-backup-unlock", "j"),
            line(json!({"id": 5, "op": "bye"})),
        ],
    );
    assert_eq!(session.hang_up(), Some(0));
    let agent_log = vm.root().join("var/vcap/sys/log/bbr-agent/bbr-agent.log");
    let log = std::fs::read_to_string(&agent_log).unwrap();
    assert!(
        log.contains("pre-backup-lock"),
        "the session logged:\n{log}"
    );
    assert!(
        !log.contains("went away"),
        "a clean session logged the driver as gone:\n{log}"
    );

    let session = {
        let mut s = Session::start(&vm);
        all_ok(&mut s, &[hello(1)]);
        s
    };
    session.hang_up();
    let log = std::fs::read_to_string(&agent_log).unwrap();
    assert!(
        log.contains("the driver went away"),
        "a driver that hung up without bye is logged as gone:\n{log}"
    );
}

/// A `bye` sent behind a request still running, and then the input closed (a driver that
/// pipelines its goodbye and dies): the `bye` is not the clean end yet, so the driver is gone,
/// and the running backup script is ended now, not after its 60 s; the session's exit says
/// it did not end cleanly.
#[test]
fn a_bye_behind_a_running_script_does_not_hide_a_driver_that_went_away() {
    let vm = Vm::new();
    vm.job("j").script("backup", "sleep 60");
    let input = [
        hello(1),
        line(json!({"id": 2, "op": "describe"})),
        line(json!({"id": 3, "op": "create_store"})),
        run_scripts(4, "backup", "j"),
        line(json!({"id": 5, "op": "bye"})),
    ]
    .map(|l| l + "\n")
    .concat();
    let started = Instant::now();
    let (code, messages, stderr) = serve(&vm, input.as_bytes());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the backup script ran on for {took:?} after the driver went away\n{messages:#?}\n{stderr}"
    );
    assert!(
        stderr.contains("the driver went away"),
        "the driver's end not seen:\n{stderr}"
    );
    assert_ne!(code, Some(0), "{messages:#?}\n{stderr}");
}
