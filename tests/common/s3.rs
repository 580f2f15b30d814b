//! The tests' own look into a Garage bucket, beside bbr-agent's: list what it holds (objects
//! and in-progress multipart uploads), fetch and put whole objects, copy a bucket prefix to a
//! local directory and back. Signed by rusty-s3, sent by ureq, as plain as a test needs.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};

use super::garage::Garage;

const SIGNED_FOR: Duration = Duration::from_secs(600);

pub struct TestBucket {
    bucket: Bucket,
    credentials: Credentials,
    agent: ureq::Agent,
    pub name: String,
}

impl TestBucket {
    /// A new bucket of the test binary's Garage.
    pub fn new(garage: &Garage, name: &str) -> TestBucket {
        let name = garage.bucket(name);
        let endpoint = garage.endpoint.parse().expect("endpoint URL");
        let bucket = Bucket::new(
            endpoint,
            UrlStyle::Path,
            name.clone(),
            garage.region.clone(),
        )
        .expect("bucket");
        TestBucket {
            bucket,
            credentials: Credentials::new(garage.key_id.clone(), garage.secret.clone()),
            agent: ureq::Agent::new_with_defaults(),
            name,
        }
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.name)
    }

    /// Every key under `prefix`, in order.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut list = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            list.with_prefix(prefix);
            if let Some(t) = &token {
                list.with_continuation_token(t.clone());
            }
            let url = list.sign(SIGNED_FOR);
            let body = self
                .agent
                .get(url.as_str())
                .call()
                .expect("list objects")
                .body_mut()
                .read_to_string()
                .expect("list body");
            let page = ListObjectsV2::parse_response(&body).expect("list page");
            keys.extend(page.contents.into_iter().map(|o| o.key));
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        keys
    }

    /// The keys of the multipart uploads in progress under `prefix`.
    pub fn uploads(&self, prefix: &str) -> Vec<String> {
        // Sorted by name, as `sign` wants; rusty-s3 has no action for this listing.
        let query = [("prefix", prefix), ("uploads", "")];
        let url = rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            rusty_s3::Method::Get,
            self.bucket.base_url().clone(),
            self.credentials.key(),
            self.credentials.secret(),
            None,
            self.bucket.region(),
            SIGNED_FOR.as_secs(),
            query.iter().copied(),
            std::iter::empty(),
        );
        let body = self
            .agent
            .get(url.as_str())
            .call()
            .expect("list uploads")
            .body_mut()
            .read_to_string()
            .expect("uploads body");
        // The <Key> of each <Upload>.
        body.split("<Upload>")
            .skip(1)
            .filter_map(|u| {
                let start = u.find("<Key>")? + 5;
                let end = u[start..].find("</Key>")? + start;
                Some(u[start..end].to_string())
            })
            .filter(|k| k.starts_with(prefix))
            .collect()
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        self.agent
            .get(url.as_str())
            .call()
            .unwrap_or_else(|e| panic!("get {key}: {e}"))
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .expect("object body")
    }

    pub fn put(&self, key: &str, bytes: &[u8]) {
        let url = self
            .bucket
            .put_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        self.agent
            .put(url.as_str())
            .send(bytes)
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    /// Copies every object under `prefix` into `dir`, by its key's last part (a backup's
    /// directory is flat).
    pub fn download(&self, prefix: &str, dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        for key in self.keys(prefix) {
            let name = key.rsplit('/').next().unwrap();
            fs::write(dir.join(name), self.get(&key)).unwrap();
        }
    }

    /// Puts every file of `dir` under `prefix/`.
    pub fn upload(&self, dir: &Path, prefix: &str) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            self.put(
                &format!("{prefix}/{name}"),
                &fs::read(entry.path()).unwrap(),
            );
        }
    }
}

/// What a test gives bbr-agent to reach Garage: its endpoint and key, and a HOME of its own
/// (`dir/home`, made here) without `~/.aws`, so nothing of the machine's AWS settings is read.
pub fn s3_env(garage: &Garage, dir: &Path) -> Vec<(String, String)> {
    let home = dir.join("home");
    fs::create_dir_all(&home).unwrap();
    let mut env: Vec<(String, String)> = garage
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    env.push(("HOME".into(), home.display().to_string()));
    env
}
