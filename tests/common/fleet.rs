//! A fleet: several fake VMs sharing one call log, an inventory that reaches each VM's
//! `bbr-agent serve`, and the driver run against it.

use std::fs;
use std::path::{Path, PathBuf};

use super::{AGENT, Run, Vm};

pub struct Member {
    pub group: String,
    pub index: u32,
    pub vm: Vm,
}

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
}

impl Fleet {
    /// api/0's `api-lock` is locked before `db` of release `acme` (db/0's), not before
    /// legacy/0's `db` (release `legacy`): its lock waits up to 10 s to see legacy/0's lock,
    /// so a lock order matched on the name alone makes it give up. Releases are the caller's
    /// to say (an inventory's `releases`, a director's manifest).
    pub fn release_ordered() -> Fleet {
        let mut fleet = Fleet::new();
        let log = fleet.log_path();
        fleet
            .add("api", 0)
            .job("api-lock")
            .recording_locks()
            .script(
                "pre-backup-lock",
                &format!(
                    "echo \"$ME\" >> \"$LOG\"\nfor i in $(seq 100); do grep -q '^legacy/0 db pre-backup-lock$' '{}' && exit 0; sleep 0.1; done\necho 'legacy/0 never locked' >&2; exit 1",
                    log.display()
                ),
            )
            .metadata("backup_should_be_locked_before:\n- {job_name: db, release: acme}");
        for group in ["db", "legacy"] {
            let vm = fleet.add(group, 0);
            vm.job("db").recording_locks().copying_backup_restore();
            super::write_file(&vm.data_dir("db").join("rows"), group.as_bytes());
        }
        fleet
    }

    pub fn new() -> Fleet {
        Fleet {
            dir: tempfile::tempdir().expect("temp dir"),
            members: Vec::new(),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    /// Adds the VM `group/index`; its scripts log `group/index job script` to the fleet log.
    pub fn add(&mut self, group: &str, index: u32) -> &Vm {
        let label = format!("{group}/{index}");
        let vm = Vm::with_identity("acme", group).in_fleet(self.log_path(), &label);
        self.members.push(Member {
            group: group.to_string(),
            index,
            vm,
        });
        &self.members.last().unwrap().vm
    }

    pub fn vm(&self, group: &str, index: u32) -> &Vm {
        &self
            .members
            .iter()
            .find(|m| m.group == group && m.index == index)
            .expect("a member of the fleet")
            .vm
    }

    pub fn calls(&self) -> Vec<String> {
        super::read_calls(&self.log_path())
    }

    /// Writes an inventory whose per-instance command is `command(member)`.
    pub fn inventory_with(&self, command: impl Fn(&Member) -> String) -> PathBuf {
        self.inventory_with_keys(command, |_| String::new())
    }

    /// [`Fleet::inventory_with`], each instance's entry with `keys(member)` added: YAML
    /// lines of its own, each indented by two spaces and ending in a newline.
    pub fn inventory_with_keys(
        &self,
        command: impl Fn(&Member) -> String,
        keys: impl Fn(&Member) -> String,
    ) -> PathBuf {
        let mut text = String::from("deployment: acme\ninstances:\n");
        for m in &self.members {
            let cmd = command(m).replace('\'', "''");
            text.push_str(&format!(
                "- group: {}\n  index: {}\n  command: '{cmd}'\n{}",
                m.group,
                m.index,
                keys(m)
            ));
        }
        let path = self.dir.path().join("inventory.yml");
        fs::write(&path, text).unwrap();
        path
    }

    /// An inventory that runs each VM's agent locally: `bbr-agent --root <vm> serve`.
    pub fn local_inventory(&self) -> PathBuf {
        self.inventory_with(|m| format!("{AGENT} --root {} serve", m.vm.root().display()))
    }

    pub fn artifacts(&self) -> PathBuf {
        let dir = self.dir.path().join("artifacts");
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn artifact_dir(&self) -> PathBuf {
        super::only_artifact_dir(&self.artifacts())
    }

    /// Runs `bbr-agent deployment --inventory <inventory> <args>`.
    pub fn driver(&self, inventory: &Path, args: &[&str]) -> Run {
        let mut all = vec![
            "deployment".to_string(),
            "--inventory".to_string(),
            inventory.display().to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        Run::new(&all, self.dir.path())
    }

    /// `deployment backup` into `artifacts()`.
    pub fn backup(&self, inventory: &Path, extra: &[&str]) -> Run {
        let artifacts = self.artifacts().display().to_string();
        let mut args = vec!["backup", "--artifact-path", &artifacts];
        args.extend_from_slice(extra);
        self.driver(inventory, &args)
    }
}
