//! A BOSH director stand-in for the driver's end-to-end tests: HTTPS on a free loopback port
//! with a certificate from its own CA (made here with rcgen; [`DirectorStandin::ca_pem`] is
//! what a test hands over as `--ca-cert`).
//!
//! It models exactly this of a BOSH director (shapes as the director and the BOSH CLI's
//! client read them):
//! - `GET /info`, without credentials: `user_authentication` is `{type: uaa, options: {url}}`
//!   (the UAA is this same server under `/uaa`) or `{type: basic}`.
//! - `POST /uaa/oauth/token`: a client-credentials grant with the client and secret as basic
//!   auth; `{access_token, token_type: bearer, expires_in, scope, jti}`, or `401
//!   {error: unauthorized, error_description: Bad credentials}`. A token may be made to stop
//!   working after a number of calls ([`Options::token_uses`]): the director then answers
//!   401, as it does to an expired token.
//! - Every other call demands a valid bearer token (UAA) or the basic credentials, else `401`.
//! - `GET /deployments`: `[{name, releases, stemcells, cloud_config, teams}]`; `GET
//!   /deployments/NAME`: `{manifest}`, a v2 manifest whose instance groups list their jobs with
//!   the releases a test gives, and `properties: {bbr: {backup_one_restore_all: true}}` on
//!   the jobs a test names.
//! - `GET /deployments/NAME/vms?format=full`: `302` to `/tasks/ID`, whose result is one JSON
//!   object per line (`agent_id, job_name, index, id, ips, bootstrap, job_state, ...`); an
//!   unknown deployment is `404 {code: 70000, description: "Deployment 'NAME' doesn't exist"}`.
//! - `POST /deployments/NAME/ssh`, `command: setup` with `target: {job, indexes, ids}` and
//!   `params: {user, public_key}`: creates the user on every targeted instance and authorizes
//!   the key (here: a Unix user of that name aliasing root, `useradd -o -u 0`, and the key
//!   appended to the test sshd's authorized_keys, commented with the user's name), then `302`
//!   to a task whose result is `[{status: success, ip, host_public_key, id, index, job,
//!   command}]`. `command: cleanup` with `params: {user_regex: "^NAME"}` removes those keys and
//!   users (only a `^literal` prefix is understood). Faults on demand: one instance's setup
//!   fails, or every cleanup is answered 500; or a request is never answered (a director that
//!   hangs).
//! - `GET /tasks/ID`: `{id, state, description, timestamp, result, user, deployment}`, first
//!   `processing`, then `done`; `GET /tasks/ID/output?type=result`: the task's result.
//!
//! Where it differs from a director, for the sake of a test on one machine: every instance's
//! `ip` in the SSH result is `127.0.0.1:PORT` (the test sshd's port; BBR takes `host:port`
//! there too), and all instances are the one sshd, told apart by the agent command.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use base64::Engine as _;

/// How the stand-in wants to be spoken to.
#[derive(Clone)]
pub enum StandinAuth {
    Uaa { client: String, secret: String },
    Basic { user: String, password: String },
}

/// One VM of a deployment.
#[derive(Clone)]
pub struct StandinVm {
    pub group: String,
    pub index: u32,
    pub id: String,
    pub bootstrap: bool,
    /// What the director says the VM's host key is.
    pub host_public_key: String,
    /// The sshd that serves this VM.
    pub ssh_port: u16,
}

#[derive(Clone)]
pub struct Options {
    pub auth: StandinAuth,
    pub deployments: Vec<(String, Vec<StandinVm>)>,
    /// The sshd's authorized_keys file, where setup adds keys and cleanup removes them.
    pub authorized_keys: PathBuf,
    /// A token stops working after this many calls.
    pub token_uses: Option<u32>,
    /// `(instance group, job, release)`: the jobs of the manifest.
    pub releases: Vec<(String, String, String)>,
    /// The instance (by id) whose SSH setup fails: its status is `failure`, as the director
    /// reports an agent that could not add the user.
    pub fail_setup_of: Option<String>,
    /// Every cleanup is answered `500`.
    pub fail_cleanup: bool,
    /// `(instance group, job)` whose manifest properties set
    /// `bbr: {backup_one_restore_all: true}`.
    pub one_for_all: Vec<(String, String)>,
    /// A request whose path starts with this is never answered: the connection is held open
    /// (for a minute), as by a director that hangs.
    pub hang_on: Option<String>,
    /// The SSH setup task stays `processing` for ever, as on a director whose agents are slow.
    pub setup_never_ends: bool,
}

struct Task {
    polls: u32,
    description: String,
    deployment: String,
    result: String,
}

struct State {
    opts: Options,
    port: u16,
    /// Token -> calls it has left.
    tokens: HashMap<String, u32>,
    grants: u32,
    next_id: u64,
    tasks: HashMap<u64, Task>,
    /// Unix users made by setup and not yet removed.
    users: Vec<String>,
    /// `METHOD path` of every request, in order.
    calls: Vec<String>,
}

pub struct DirectorStandin {
    pub url: String,
    pub ca_pem: String,
    dir: tempfile::TempDir,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl DirectorStandin {
    pub fn start(opts: Options) -> DirectorStandin {
        let (ca_pem, config) = tls_config();
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the stand-in");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            opts,
            port,
            tokens: HashMap::new(),
            grants: 0,
            next_id: 1,
            tasks: HashMap::new(),
            users: Vec::new(),
            calls: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&state), Arc::clone(&stop));
        thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (s, config) = (Arc::clone(&s), Arc::clone(&config));
                thread::spawn(move || serve_connection(stream, config, &s));
            }
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        DirectorStandin {
            url: format!("https://127.0.0.1:{port}"),
            ca_pem,
            dir,
            state,
            stop,
            port,
        }
    }

    /// The CA as a file, for `--ca-cert PATH`.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Tokens the UAA granted so far.
    pub fn grants(&self) -> u32 {
        self.state.lock().unwrap().grants
    }

    /// Unix users that setup made and cleanup has not removed.
    pub fn users(&self) -> Vec<String> {
        self.state.lock().unwrap().users.clone()
    }

    /// `METHOD path` of every request so far.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }
}

impl Drop for DirectorStandin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        // A test that failed half-way leaves no root alias behind.
        let users = std::mem::take(&mut self.state.lock().unwrap().users);
        for user in users {
            unix_user(&["userdel", "-f", &user], &[6]);
        }
    }
}

/// A CA that signed nothing of the stand-in's, for "the CA does not match".
pub fn unrelated_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "some other CA");
    params.self_signed(&key).unwrap().pem()
}

fn tls_config() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "director stand-in CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), Arc::new(config))
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Response {
    status: u16,
    location: Option<String>,
    body: String,
}

fn json(status: u16, body: serde_json::Value) -> Response {
    Response {
        status,
        location: None,
        body: body.to_string(),
    }
}

/// One request per connection, answered with `Connection: close`.
fn serve_connection(tcp: TcpStream, config: Arc<rustls::ServerConfig>, state: &Mutex<State>) {
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let Some(request) = read_request(&mut tls) else {
        return;
    };
    let hang = {
        let st = state.lock().unwrap();
        st.opts.hang_on.clone()
    };
    if hang.is_some_and(|prefix| request.path.starts_with(&prefix)) {
        state.lock().unwrap().calls.push(format!(
            "{} {} (not answered)",
            request.method, request.path
        ));
        thread::sleep(std::time::Duration::from_secs(60));
        return;
    }
    let response = handle(state, &request);
    let reason = match response.status {
        200 => "OK",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        response.body.len()
    );
    if let Some(l) = &response.location {
        head.push_str(&format!("Location: {l}\r\n"));
    }
    head.push_str("\r\n");
    let _ = tls.write_all(head.as_bytes());
    let _ = tls.write_all(response.body.as_bytes());
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

fn read_request(stream: &mut impl Read) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if length > 1 << 20 {
        return None;
    }
    let mut body = buf[end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn basic(user: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
    )
}

fn handle(state: &Mutex<State>, req: &Request) -> Response {
    let mut st = state.lock().unwrap();
    st.calls.push(format!("{} {}", req.method, req.path));
    let port = st.port;
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/info") => {
            let auth = match &st.opts.auth {
                StandinAuth::Uaa { .. } => serde_json::json!({
                    "type": "uaa",
                    "options": {"url": format!("https://127.0.0.1:{port}/uaa")},
                }),
                StandinAuth::Basic { .. } => serde_json::json!({"type": "basic", "options": {}}),
            };
            return json(
                200,
                serde_json::json!({
                    "name": "stand-in", "uuid": "00000000-0000-0000-0000-000000000000",
                    "version": "282.0.0 (00000000)", "user": null, "cpi": "warden_cpi",
                    "stemcell_os": "ubuntu-jammy", "stemcell_version": "1.0",
                    "user_authentication": auth,
                    "features": {"snapshots": {"status": false}},
                }),
            );
        }
        ("POST", "/uaa/oauth/token") => return token(&mut st, req),
        _ => {}
    }
    if let Some(refused) = authorize(&mut st, req) {
        return refused;
    }
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", ["deployments"]) => {
            let list: Vec<_> = st
                .opts
                .deployments
                .iter()
                .map(|(name, _)| {
                    serde_json::json!({"name": name, "releases": [], "stemcells": [],
                                       "cloud_config": "latest", "teams": []})
                })
                .collect();
            json(200, serde_json::Value::Array(list))
        }
        ("GET", ["deployments", name]) => {
            let Some(vms) = deployment(&st, name) else {
                return no_such(name);
            };
            let mut manifest = format!("name: {name}\ninstance_groups:\n");
            let mut groups: Vec<&str> = Vec::new();
            for vm in &vms {
                if !groups.contains(&vm.group.as_str()) {
                    groups.push(&vm.group);
                }
            }
            for group in groups {
                let count = vms.iter().filter(|v| v.group == group).count();
                manifest.push_str(&format!("- name: {group}\n  instances: {count}\n  jobs:\n"));
                for (_, job, release) in st.opts.releases.iter().filter(|(g, _, _)| g == group) {
                    manifest.push_str(&format!("  - name: {job}\n    release: {release}\n"));
                    let flagged = (group.to_string(), job.clone());
                    if st.opts.one_for_all.contains(&flagged) {
                        manifest.push_str(
                            "    properties:\n      bbr:\n        backup_one_restore_all: true\n",
                        );
                    }
                }
            }
            json(200, serde_json::json!({"manifest": manifest}))
        }
        ("GET", ["deployments", name, "vms"]) if query == "format=full" => {
            let Some(vms) = deployment(&st, name) else {
                return no_such(name);
            };
            let result: String = vms
                .iter()
                .map(|vm| {
                    serde_json::json!({
                        "agent_id": format!("agent-{}", vm.id), "job_name": vm.group,
                        "index": vm.index, "id": vm.id, "ips": ["127.0.0.1"], "dns": [],
                        "bootstrap": vm.bootstrap, "job_state": "running", "state": "started",
                        "vm_cid": format!("vm-{}", vm.id), "vm_type": "default", "az": "z1",
                        "processes": [], "resurrection_paused": false, "ignore": false,
                    })
                    .to_string()
                        + "\n"
                })
                .collect();
            task(&mut st, name, "retrieve vm-stats", result)
        }
        ("POST", ["deployments", name, "ssh"]) => {
            let Some(vms) = deployment(&st, name) else {
                return no_such(name);
            };
            let Ok(body) = serde_json::from_slice::<serde_json::Value>(&req.body) else {
                return json(
                    400,
                    serde_json::json!({"code": 400, "description": "bad JSON"}),
                );
            };
            let group = body["target"]["job"].as_str().map(str::to_string);
            let targeted: Vec<StandinVm> = vms
                .into_iter()
                .filter(|vm| group.as_deref().is_none_or(|g| g == vm.group))
                .collect();
            let keys = st.opts.authorized_keys.clone();
            let (result, description) = match body["command"].as_str() {
                Some("setup") => {
                    let user = body["params"]["user"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let key = body["params"]["public_key"].as_str().unwrap_or_default();
                    let mut key_words = key.split_whitespace();
                    let line = format!(
                        "{} {} {user}",
                        key_words.next().unwrap_or_default(),
                        key_words.next().unwrap_or_default()
                    );
                    if !st.users.contains(&user) {
                        unix_user(
                            &[
                                "useradd", "-o", "-u", "0", "-g", "0", "-M", "-N", "-d", "/", "-s",
                                "/bin/sh", "-p", "*", &user,
                            ],
                            &[9],
                        );
                        st.users.push(user.clone());
                    }
                    let mut hosts = Vec::new();
                    for vm in &targeted {
                        if st.opts.fail_setup_of.as_deref() == Some(vm.id.as_str()) {
                            hosts.push(serde_json::json!({
                                "status": "failure", "ip": "", "host_public_key": "",
                                "id": vm.id, "index": vm.index, "job": vm.group,
                                "command": "setup",
                            }));
                            continue;
                        }
                        super::sshd::add_authorized_key(&keys, &line);
                        hosts.push(serde_json::json!({
                            "status": "success", "ip": format!("127.0.0.1:{}", vm.ssh_port),
                            "host_public_key": vm.host_public_key, "id": vm.id,
                            "index": vm.index, "job": vm.group, "command": "setup",
                        }));
                    }
                    (serde_json::Value::Array(hosts), "ssh: setup")
                }
                Some("cleanup") if st.opts.fail_cleanup => {
                    return json(
                        500,
                        serde_json::json!({"code": 100, "description": "the director is on fire"}),
                    );
                }
                Some("cleanup") => {
                    let regex = body["params"]["user_regex"].as_str().unwrap_or_default();
                    let prefix = regex.strip_prefix('^').unwrap_or("\u{0}never").to_string();
                    super::sshd::remove_authorized_keys(&keys, |line| {
                        line.split_whitespace()
                            .nth(2)
                            .is_some_and(|comment| comment.starts_with(&prefix))
                    });
                    let (gone, kept): (Vec<String>, Vec<String>) =
                        st.users.drain(..).partition(|u| u.starts_with(&prefix));
                    st.users = kept;
                    for user in gone {
                        unix_user(&["userdel", "-f", &user], &[6]);
                    }
                    let hosts: Vec<_> = targeted
                        .iter()
                        .map(|vm| {
                            serde_json::json!({
                                "status": "success", "ip": format!("127.0.0.1:{}", vm.ssh_port),
                                "host_public_key": "", "id": vm.id, "index": vm.index,
                                "job": vm.group, "command": "cleanup",
                            })
                        })
                        .collect();
                    (serde_json::Value::Array(hosts), "ssh: cleanup")
                }
                _ => {
                    return json(
                        400,
                        serde_json::json!({"code": 400, "description": "bad command"}),
                    );
                }
            };
            task(&mut st, name, description, result.to_string())
        }
        ("GET", ["tasks", id]) => {
            let setup_never_ends = st.opts.setup_never_ends;
            let Some(task) = id.parse().ok().and_then(|id: u64| st.tasks.get_mut(&id)) else {
                return json(
                    404,
                    serde_json::json!({"code": 10001, "description": "Task not found"}),
                );
            };
            task.polls += 1;
            let stuck = setup_never_ends && task.description.contains("setup");
            let state = if task.polls == 1 || stuck {
                "processing"
            } else {
                "done"
            };
            let (description, deployment) = (task.description.clone(), task.deployment.clone());
            json(
                200,
                serde_json::json!({
                    "id": id.parse::<u64>().unwrap(), "state": state, "description": description,
                    "timestamp": 1_764_590_000, "started_at": 1_764_590_000, "result": "",
                    "user": "admin", "deployment": deployment, "context_id": "",
                }),
            )
        }
        ("GET", ["tasks", id, "output"]) if query == "type=result" => {
            match id.parse().ok().and_then(|id: u64| st.tasks.get(&id)) {
                Some(task) => Response {
                    status: 200,
                    location: None,
                    body: task.result.clone(),
                },
                None => json(
                    404,
                    serde_json::json!({"code": 10001, "description": "Task not found"}),
                ),
            }
        }
        _ => json(
            404,
            serde_json::json!({"code": 404, "description": "no such endpoint"}),
        ),
    }
}

fn deployment(st: &State, name: &str) -> Option<Vec<StandinVm>> {
    st.opts
        .deployments
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, vms)| vms.clone())
}

fn no_such(name: &str) -> Response {
    json(
        404,
        serde_json::json!({"code": 70000, "description": format!("Deployment '{name}' doesn't exist")}),
    )
}

/// A new task, answered as the director does: a redirect to it.
fn task(st: &mut State, deployment: &str, description: &str, result: String) -> Response {
    let id = st.next_id;
    st.next_id += 1;
    st.tasks.insert(
        id,
        Task {
            polls: 0,
            description: description.to_string(),
            deployment: deployment.to_string(),
            result,
        },
    );
    Response {
        status: 302,
        location: Some(format!("https://127.0.0.1:{}/tasks/{id}", st.port)),
        body: String::new(),
    }
}

fn token(st: &mut State, req: &Request) -> Response {
    let StandinAuth::Uaa { client, secret } = st.opts.auth.clone() else {
        return json(404, serde_json::json!({"error": "not_found"}));
    };
    let form = String::from_utf8_lossy(&req.body);
    if req.header("authorization") != Some(basic(&client, &secret).as_str())
        || !form
            .split('&')
            .any(|kv| kv == "grant_type=client_credentials")
    {
        return json(
            401,
            serde_json::json!({"error": "unauthorized", "error_description": "Bad credentials"}),
        );
    }
    st.grants += 1;
    let token = format!("token-{}-{}", st.grants, std::process::id());
    let uses = st.opts.token_uses.unwrap_or(u32::MAX);
    st.tokens.insert(token.clone(), uses);
    json(
        200,
        serde_json::json!({"access_token": token, "token_type": "bearer", "expires_in": 43199,
                           "scope": "bosh.admin", "jti": format!("jti-{}", st.grants)}),
    )
}

/// None when the request carries valid credentials, else the director's 401.
fn authorize(st: &mut State, req: &Request) -> Option<Response> {
    let given = req.header("authorization").unwrap_or_default().to_string();
    let ok = match &st.opts.auth {
        StandinAuth::Basic { user, password } => given == basic(user, password),
        StandinAuth::Uaa { .. } => match given.strip_prefix("Bearer ") {
            Some(token) => match st.tokens.get_mut(token) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    true
                }
                _ => false,
            },
            None => false,
        },
    };
    (!ok).then(|| {
        json(
            401,
            serde_json::json!({"code": 600000, "description": "Require one of the scopes: bosh.admin, bosh.read"}),
        )
    })
}

/// Runs useradd/userdel; `fine` are exit codes that mean it is already so. /etc/passwd is
/// locked while another test changes it: try again.
fn unix_user(args: &[&str], fine: &[i32]) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut last = String::new();
    for _ in 0..50 {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): the stand-in needs Debian's passwd",
                    args[0]
                )
            });
        match out.status.code() {
            Some(0) => return,
            Some(c) if fine.contains(&c) => return,
            _ => last = String::from_utf8_lossy(&out.stderr).into_owned(),
        }
        thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{args:?} failed: {last}");
}

/// Whether the system has a user of this name.
pub fn unix_user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
