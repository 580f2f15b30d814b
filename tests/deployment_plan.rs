//! `deployment --inventory FILE plan backup|restore [--json]`: the lock order over every VM of
//! a deployment, which jobs run side by side, without running anything but metadata scripts.

mod common;

use common::fleet::Fleet;

/// api/0 web must be locked after the postgres jobs of db/0 and db/1 (they lock first); db/1
/// has no restore script.
fn fleet() -> Fleet {
    let mut fleet = Fleet::new();
    fleet.add("api", 0).job("web").recording_locks();
    for index in [0, 1] {
        let vm = fleet.add("db", index);
        let job = vm.job("postgres");
        job.recording_locks().recording("backup").metadata(
            "backup_should_be_locked_before:\n- {job_name: web, release: acme}\nrestore_should_be_locked_before:\n- {job_name: web, release: acme}",
        );
        if index == 0 {
            job.recording("restore");
        }
    }
    fleet
}

#[test]
fn a_deployment_plan_shows_the_lock_order_over_every_vm_and_runs_nothing_but_metadata() {
    let fleet = fleet();
    let inventory = fleet.local_inventory();
    let backup = fleet.driver(&inventory, &["plan", "backup"]);
    backup
        .assert_success()
        .assert_stdout_contains("backup plan for acme (3 VMs: api/0, db/0, db/1):\n")
        .assert_stdout_contains(
            "  1. pre-backup-lock (all 2 jobs in parallel): db/0 postgres, db/1 postgres\n",
        )
        .assert_stdout_contains("  2. pre-backup-lock: api/0 web\n")
        .assert_stdout_contains(
            "  3. backup (all 2 jobs in parallel): db/0 postgres, db/1 postgres\n",
        )
        .assert_stdout_contains("  4. post-backup-unlock: api/0 web\n")
        .assert_stdout_contains(
            "  5. post-backup-unlock (all 2 jobs in parallel): db/0 postgres, db/1 postgres\n",
        )
        // Its metadata scripts are shown as every script is.
        .assert_stdout_contains("db/1 postgres metadata: done in ");

    let restore = fleet.driver(&inventory, &["--max-in-flight", "1", "plan", "restore"]);
    restore
        .assert_success()
        .assert_stdout_contains(
            "  1. pre-restore-lock (one job at a time): db/0 postgres, db/1 postgres\n",
        )
        .assert_stdout_contains("  2. pre-restore-lock: api/0 web\n")
        .assert_stdout_contains("  3. restore: db/0 postgres\n");

    let batched = fleet.driver(&inventory, &["--max-in-flight", "1", "plan", "backup"]);
    batched.assert_success().assert_stdout_contains(
        "  1. pre-backup-lock (2 jobs, in parallel on at most 1 VM at a time): db/0 postgres, db/1 postgres\n",
    );

    assert_eq!(
        fleet.calls(),
        Vec::<String>::new(),
        "a plan ran a lock, backup or restore script\n{}{}",
        backup.explain(),
        restore.explain()
    );
    for m in &fleet.members {
        assert!(
            !m.vm.store().exists(),
            "a plan made a store\n{}",
            backup.explain()
        );
    }
}

#[test]
fn a_deployment_plan_as_json_names_each_job_with_its_vm() {
    let fleet = fleet();
    let inventory = fleet.local_inventory();
    let run = fleet.driver(&inventory, &["plan", "backup", "--json"]);
    run.assert_success();
    let plan: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document: {e}\n{}", run.explain()));
    let job = |instance: &str, job: &str| serde_json::json!({"instance": instance, "job": job});
    assert_eq!(plan["workflow"], "backup");
    assert_eq!(plan["deployment"], "acme");
    assert_eq!(
        plan["instances"],
        serde_json::json!(["api/0", "db/0", "db/1"])
    );
    assert_eq!(plan["parallel"], true);
    assert_eq!(
        plan["lock"],
        serde_json::json!([
            [job("db/0", "postgres"), job("db/1", "postgres")],
            [job("api/0", "web")]
        ]),
        "{}",
        run.explain()
    );
    assert_eq!(
        plan["run"],
        serde_json::json!([job("db/0", "postgres"), job("db/1", "postgres")])
    );
    assert_eq!(
        plan["unlock"],
        serde_json::json!([
            [job("api/0", "web")],
            [job("db/0", "postgres"), job("db/1", "postgres")]
        ])
    );
}

#[test]
fn a_deployment_plan_with_a_vm_out_of_reach_names_it_and_fails() {
    let fleet = fleet();
    let inventory = fleet.inventory_with(|m| match m.group.as_str() {
        "api" => "exit 3".to_string(),
        _ => format!("{} --root {} serve", common::AGENT, m.vm.root().display()),
    });
    let run = fleet.driver(&inventory, &["plan", "backup"]);
    run.assert_code(1)
        .assert_stderr_contains("api/0: cannot reach the agent with `exit 3`");
    assert!(
        !run.stdout.contains("backup plan for"),
        "a plan without one of its VMs was shown\n{}",
        run.explain()
    );
}

#[test]
fn a_json_plan_keeps_stdout_json_while_a_vm_is_slow_to_connect() {
    let fleet = fleet();
    let inventory = fleet.inventory_with(|m| {
        format!(
            "sleep 2; exec {} --root {} serve",
            common::AGENT,
            m.vm.root().display()
        )
    });
    let mut command = std::process::Command::new(common::AGENT);
    command
        .args(["deployment", "--inventory"])
        .arg(&inventory)
        .args(["plan", "backup", "--json"])
        .env("BBR_AGENT_CONNECTING_EVERY", "500ms");
    let run = common::Run::of(&mut command, fleet.dir.path());
    run.assert_success()
        .assert_stderr_contains("still connecting: ");
    let plan: Result<serde_json::Value, _> = serde_json::from_str(&run.stdout);
    assert!(
        plan.is_ok_and(|p| p["workflow"] == "backup"),
        "stdout is not the plan alone\n{}",
        run.explain()
    );
}
