//! The S3 store against a real Garage: multipart uploads, aborts, listings and ranged reads.

use std::io::{Read, Write};

use super::credentials::S3Config;
use super::garage::Garage;
use super::*;

const PART: usize = 64 * 1024;

/// Small parts, ranges and pages, so that a test object has many of each.
fn small() -> S3Options {
    S3Options {
        path_style: None,
        part_size: PART,
        budget: 4 * PART,
        senders: 2,
        range: 50_000,
        page: 3,
    }
}

fn config(g: &Garage) -> S3Config {
    S3Config {
        key_id: g.key_id.clone(),
        secret: g.secret.clone(),
        token: None,
        region: g.region.clone(),
        endpoint: g.endpoint.clone(),
        path_style: true,
        ca_bundle: None,
    }
}

/// A store on a new bucket of the shared Garage.
fn store(bucket: &str, prefix: &str, options: &S3Options) -> S3Storage {
    let g = Garage::shared();
    g.bucket(bucket);
    S3Storage::with_config(&config(g), bucket, prefix, options).expect("store")
}

/// Bytes that differ from part to part (a shifted or repeated part would show).
fn data(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn write_in_chunks(w: &mut dyn ObjectWriter, bytes: &[u8]) {
    for chunk in bytes.chunks(7777) {
        w.write_all(chunk).expect("write");
    }
}

/// The in-progress multipart uploads under the store's prefix.
fn uploads(s: &S3Storage) -> Vec<(String, String)> {
    s.client
        .list_uploads(&s.prefix, None, 1000, "test")
        .expect("list uploads")
        .uploads
        .into_iter()
        .map(|(key, id, _)| (key, id))
        .collect()
}

#[test]
fn a_multipart_object_reads_back_equal_through_ranged_reads_in_bounded_buffers() {
    let s = store("t-multipart", "cf/nightly", &small());
    let bytes = data(10 * PART + 1234);
    let mut w = s.create("dep_1/vm-0-job.tar").unwrap();
    write_in_chunks(w.as_mut(), &bytes);
    assert_eq!(w.finish().unwrap(), bytes.len() as u64);

    // 11 parts: the service's ETag of a multipart object counts them.
    let (size, etag) = s.head("dep_1/vm-0-job.tar").unwrap().unwrap();
    assert_eq!(size, bytes.len() as u64);
    assert!(etag.as_deref().unwrap_or("").ends_with("-11\""), "{etag:?}");
    let listed = s.list("dep_1/", 10).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|o| (o.key.as_str(), o.size))
            .collect::<Vec<_>>(),
        [("dep_1/vm-0-job.tar", bytes.len() as u64)]
    );
    // The store's clock (`LastModified`): what a claim's heartbeat is judged by, beside its
    // own line.
    let modified = listed[0].modified.expect("a LastModified");
    let age = std::time::SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default();
    assert!(age.as_secs() < 600, "{modified:?}");
    assert_eq!(s.describe("dep_1/x"), "s3://t-multipart/cf/nightly/dep_1/x");

    let mut back = Vec::new();
    s.open("dep_1/vm-0-job.tar")
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == bytes, "read back {} bytes, differ", back.len());

    // The buffers never held more than the budget, and hold nothing now.
    assert!(
        s.budget().peak() <= s.budget().limit(),
        "{}",
        s.budget().peak()
    );
    assert!(s.budget().peak() >= PART);
    assert_eq!(s.budget().held(), 0);
    assert!(uploads(&s).is_empty());
}

#[test]
fn writers_at_once_share_one_budget() {
    let s = std::sync::Arc::new(store("t-budget", "", &small()));
    let bytes = data(12 * PART);
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let s = s.clone();
            let bytes = bytes.clone();
            std::thread::spawn(move || {
                let mut w = s.create(&format!("d/{i}.tar")).unwrap();
                write_in_chunks(w.as_mut(), &bytes);
                w.finish().unwrap()
            })
        })
        .collect();
    for w in writers {
        assert_eq!(w.join().unwrap(), bytes.len() as u64);
    }
    // Three writers with up to four buffers each would hold 12 parts: the store's budget
    // keeps all of them to four.
    assert!(s.budget().peak() <= 4 * PART, "{}", s.budget().peak());
    assert_eq!(s.list("d/", 10).unwrap().len(), 3);
}

#[test]
fn a_small_or_empty_object_is_one_put() {
    let s = store("t-small", "p", &small());
    for (key, len) in [("a", 1000), ("empty", 0)] {
        let bytes = data(len);
        let mut w = s.create(key).unwrap();
        w.write_all(&bytes).unwrap();
        assert_eq!(w.finish().unwrap(), len as u64);
        let (size, etag) = s.head(key).unwrap().unwrap();
        assert_eq!(size, len as u64);
        assert!(!etag.unwrap_or_default().contains('-'), "one PutObject");
        let mut back = Vec::new();
        s.open(key).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, bytes);
    }
    s.put("dir/metadata", b"instances: []\n").unwrap();
    assert_eq!(s.size("dir/metadata").unwrap(), Some(14));
}

#[test]
fn an_aborted_or_dropped_writer_leaves_no_upload_and_no_object() {
    let s = store("t-abort", "x", &small());
    let bytes = data(3 * PART + 10);
    let mut w = s.create("d/aborted.tar").unwrap();
    write_in_chunks(w.as_mut(), &bytes);
    assert_eq!(uploads(&s).len(), 1, "a multipart upload is in progress");
    drop(w);
    let mut w = s.create("d/dropped.tar").unwrap();
    write_in_chunks(w.as_mut(), &bytes);
    drop(w);
    assert!(uploads(&s).is_empty(), "{:?}", uploads(&s));
    assert_eq!(s.size("d/aborted.tar").unwrap(), None);
    assert_eq!(s.size("d/dropped.tar").unwrap(), None);
    assert!(s.list("", 10).unwrap().is_empty());
    assert_eq!(s.budget().held(), 0);
}

#[test]
fn abort_unfinished_removes_the_uploads_a_killed_writer_left_under_the_prefix_only() {
    let s = store("t-unfinished", "", &small());
    // A writer that never finishes nor aborts, as a killed process leaves it.
    for key in ["dep_1/a.tar", "dep_1/b.tar", "other/c.tar"] {
        let mut w = s.create(key).unwrap();
        write_in_chunks(w.as_mut(), &data(2 * PART));
        std::mem::forget(w);
    }
    assert_eq!(uploads(&s).len(), 3);
    assert_eq!(s.abort_unfinished("dep_1/").unwrap(), 2);
    let left: Vec<String> = uploads(&s).into_iter().map(|(k, _)| k).collect();
    assert_eq!(left, vec!["other/c.tar".to_string()]);
    // More uploads than one page (3) of the listing.
    for i in 0..4 {
        let mut w = s.create(&format!("other/{i}.tar")).unwrap();
        write_in_chunks(w.as_mut(), &data(2 * PART));
        std::mem::forget(w);
    }
    assert_eq!(s.abort_unfinished("").unwrap(), 5);
    assert!(uploads(&s).is_empty());
}

#[test]
fn list_pages_through_in_key_order_up_to_the_limit_and_under_the_prefix() {
    let s = store("t-list", "backups", &small());
    let outside =
        S3Storage::with_config(&config(Garage::shared()), "t-list", "", &small()).unwrap();
    outside.put("elsewhere", b"x").unwrap();
    outside.put("backups-not/a", b"x").unwrap();
    let keys: Vec<String> = (0..8).rev().map(|i| format!("dep_{i}/metadata")).collect();
    for (i, k) in keys.iter().enumerate() {
        s.put(k, &data(i)).unwrap();
    }
    let all = s.list("", 100).unwrap();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        all.iter().map(|o| o.key.clone()).collect::<Vec<_>>(),
        sorted
    );
    assert_eq!(all[0].size, 7);
    assert_eq!(s.list("", 5).unwrap().len(), 5);
    assert_eq!(s.list("dep_3", 100).unwrap().len(), 1);
    assert!(s.list("", 0).unwrap().is_empty());

    s.remove("dep_3/metadata").unwrap();
    s.remove("dep_3/metadata").unwrap();
    assert_eq!(s.list("", 100).unwrap().len(), 7);
}

#[test]
fn create_dir_refuses_a_name_already_in_use_and_open_names_what_is_missing() {
    let s = store("t-dirs", "p", &small());
    s.put("dep_1/metadata", b"x").unwrap();
    let e = s.create_dir("dep_1").unwrap_err().to_string();
    assert!(
        e.contains("s3://t-dirs/p/dep_1/") && e.contains("already exists"),
        "{e}"
    );
    s.create_dir("dep_10").unwrap();
    let e = s.open("dep_2/metadata").err().unwrap().to_string();
    assert_eq!(e, "s3://t-dirs/p/dep_2/metadata does not exist");
    for bad in ["../x", "a//b", "a/./b", ""] {
        assert!(s.create(bad).is_err(), "{bad}");
    }
}

#[test]
fn service_errors_are_one_line_naming_the_url_and_what_to_check() {
    let g = Garage::shared();
    g.bucket("t-errors");
    let mut wrong = config(g);
    wrong.secret = "0".repeat(64);
    let s = S3Storage::with_config(&wrong, "t-errors", "p", &small()).unwrap();
    let e = s.put("k", b"x").unwrap_err().to_string();
    assert!(e.starts_with("s3://t-errors/p/k: "), "{e}");
    assert!(e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
    assert!(!e.contains('\n'), "{e}");

    let mut wrong = config(g);
    wrong.key_id = "GK0000000000000000000000".into();
    let s = S3Storage::with_config(&wrong, "t-errors", "p", &small()).unwrap();
    let e = s.list("", 10).unwrap_err().to_string();
    assert!(e.starts_with("s3://t-errors/p/: "), "{e}");
    assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");

    let s = S3Storage::with_config(&config(g), "t-no-such-bucket", "", &small()).unwrap();
    let e = s.list("", 10).unwrap_err().to_string();
    assert!(e.starts_with("s3://t-no-such-bucket/: "), "{e}");
    assert!(e.contains("bucket"), "{e}");
}

/// A loopback proxy to Garage that cuts a connection after `after[i]` bytes (the last for the
/// later ones) went one way on the `i`-th connection (`upstream`: towards Garage), `cuts`
/// times in all; then it forwards as it is.
struct CuttingProxy {
    endpoint: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CuttingProxy {
    fn start(target: &str, after: &[usize], cuts: usize, upstream: bool) -> CuttingProxy {
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let target = target.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let left = std::sync::Arc::new(AtomicUsize::new(cuts));
        let cut = std::sync::Arc::new(AtomicUsize::new(0));
        let (left2, cut2) = (left.clone(), cut.clone());
        let after = after.to_vec();
        std::thread::spawn(move || {
            for (i, client) in listener.incoming().enumerate() {
                let after = after[i.min(after.len() - 1)];
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&target) else {
                    return;
                };
                let pipe = |from: TcpStream, to: TcpStream, watched: bool| {
                    let (left, cut) = (left2.clone(), cut2.clone());
                    std::thread::spawn(move || {
                        let (mut from, mut to) = (from, to);
                        let mut buf = [0u8; 4096];
                        let mut sent = 0;
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if watched
                                && sent + n > after
                                && left
                                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                                        l.checked_sub(1)
                                    })
                                    .is_ok()
                            {
                                let _ = to.write_all(&buf[..after.saturating_sub(sent)]);
                                cut.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            sent += n;
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(client, server, upstream);
                pipe(s2, c2, !upstream);
            }
        });
        CuttingProxy { endpoint, cut }
    }

    fn cuts(&self) -> usize {
        self.cut.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn a_read_whose_connection_drops_goes_on_from_the_offset_reached() {
    let g = Garage::shared();
    let s = store("t-resume", "", &small());
    let bytes = data(6 * PART);
    let mut w = s.create("big.tar").unwrap();
    write_in_chunks(w.as_mut(), &bytes);
    w.finish().unwrap();

    // Each connection is cut 30,000 bytes into what Garage sends, three times: mid-range.
    let proxy = CuttingProxy::start(&g.endpoint, &[30_000], 3, false);
    let mut via = config(g);
    via.endpoint = proxy.endpoint.clone();
    let s = S3Storage::with_config(&via, "t-resume", "", &small()).unwrap();
    let mut back = Vec::new();
    s.open("big.tar").unwrap().read_to_end(&mut back).unwrap();
    assert_eq!(proxy.cuts(), 3);
    assert!(back == bytes, "read back {} bytes, differ", back.len());

    // A connection cut mid-range, then every new one cut before a byte: the reader gives
    // up after its tries in a row, naming the object.
    let proxy = CuttingProxy::start(&g.endpoint, &[30_000, 0], 1000, false);
    via.endpoint = proxy.endpoint.clone();
    let s = S3Storage::with_config(&via, "t-resume", "", &small()).unwrap();
    let mut r = s.open("big.tar").unwrap();
    let e = r.read_to_end(&mut Vec::new()).unwrap_err().to_string();
    assert!(e.contains("cannot read s3://t-resume/big.tar"), "{e}");
    assert!(
        proxy.cuts() <= 1 + client::TRIES as usize * client::TRIES as usize,
        "{}",
        proxy.cuts()
    );
}

#[test]
fn a_part_whose_upload_drops_is_sent_again_from_its_buffer() {
    let g = Garage::shared();
    g.bucket("t-retry");
    // Cut twice 100,000 bytes into what goes to Garage: in the middle of the second part.
    let proxy = CuttingProxy::start(&g.endpoint, &[100_000], 2, true);
    let mut via = config(g);
    via.endpoint = proxy.endpoint.clone();
    let s = S3Storage::with_config(&via, "t-retry", "", &small()).unwrap();
    let bytes = data(5 * PART + 99);
    let mut w = s.create("retried.tar").unwrap();
    write_in_chunks(w.as_mut(), &bytes);
    assert_eq!(w.finish().unwrap(), bytes.len() as u64);
    assert_eq!(proxy.cuts(), 2);
    let mut back = Vec::new();
    s.open("retried.tar")
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == bytes, "read back {} bytes, differ", back.len());
    assert!(uploads(&s).is_empty());
}

#[test]
fn a_part_that_cannot_be_sent_fails_the_writer_naming_the_object_and_aborts_its_upload() {
    let g = Garage::shared();
    let direct = store("t-fail", "", &small());
    // Every connection cut 1,000 bytes into what goes to Garage: small requests pass, no part.
    let proxy = CuttingProxy::start(&g.endpoint, &[1_000], usize::MAX, true);
    let mut via = config(g);
    via.endpoint = proxy.endpoint.clone();
    let s = S3Storage::with_config(&via, "t-fail", "", &small()).unwrap();
    let mut w = s.create("failed.tar").unwrap();
    let wrote = data(5 * PART).chunks(7777).try_for_each(|c| w.write_all(c));
    let e = match wrote {
        Err(e) => {
            drop(w);
            e.to_string()
        }
        Ok(()) => w.finish().unwrap_err().to_string(),
    };
    assert!(e.contains("upload a part of s3://t-fail/failed.tar"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    assert!(uploads(&direct).is_empty(), "{:?}", uploads(&direct));
    assert_eq!(direct.size("failed.tar").unwrap(), None);
    assert_eq!(s.budget().held(), 0);
}

/// With fewer sender threads than asked for (the OS refused the others), or none (the writer
/// sends each part itself), the object is stored whole, its buffers given back.
#[test]
fn parts_are_sent_by_the_threads_the_os_gives_down_to_the_writer_alone() {
    let s = store("t-few-senders", "", &small());
    let bytes = data(6 * PART + 99);
    for allowed in [0, 1] {
        let key = format!("dep/{allowed}.tar");
        let mut w = s.create(&key).unwrap();
        let ((), refused) = crate::thread_start::counting_refusals(allowed, || {
            write_in_chunks(w.as_mut(), &bytes);
        });
        assert_eq!(
            refused, 1,
            "the senders were not asked of the OS through thread_start"
        );
        assert_eq!(w.finish().unwrap(), bytes.len() as u64);
        let mut back = Vec::new();
        s.open(&key).unwrap().read_to_end(&mut back).unwrap();
        assert!(back == bytes, "read back {} bytes, differ", back.len());
        assert_eq!(s.budget().held(), 0);
    }
    assert!(uploads(&s).is_empty());
}

/// A loopback proxy to Garage that answers each of the first `busy` requests with a 503
/// (each on its own connection), then forwards.
fn busy_proxy(target: &str, busy: usize) -> String {
    use std::net::{TcpListener, TcpStream};
    let target = target.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (i, client) in listener.incoming().enumerate() {
            let Ok(mut client) = client else { return };
            if i < busy {
                // Read the request whole (headers, then Content-Length bytes), then refuse.
                let mut seen = Vec::new();
                let mut byte = [0u8; 1];
                while !seen.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
                    seen.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&seen).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                let _ = std::io::copy(&mut (&mut client).take(length), &mut std::io::sink());
                let _ = client.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let Ok(server) = TcpStream::connect(&target) else {
                return;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut c2, &mut s2));
            let (mut client, mut server) = (client, server);
            std::thread::spawn(move || std::io::copy(&mut server, &mut client));
        }
    });
    endpoint
}

/// What becomes of the first CompleteMultipartUpload (a POST with `uploadId=`) that passes
/// [`losing_proxy`].
enum Lost {
    /// Garage gets it and completes the upload; its answer never reaches the client.
    Answer,
    /// Garage never gets it: this runs in its place; the client gets no answer either.
    Request(Box<dyn Fn() + Send + Sync>),
}

/// A loopback proxy to Garage that reads each request whole and sends it to Garage on a
/// connection of its own (asked to close after its answer, which goes back as it is), but
/// for the first completion, which it `loses`: the client's connection then drops. Returns
/// the endpoint and how many completions were lost (0 or 1).
fn losing_proxy(
    target: &str,
    lost: Lost,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let target = target.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let losses = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = losses.clone();
    let lost = std::sync::Arc::new(lost);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let (target, counted, lost) = (target.clone(), counted.clone(), lost.clone());
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let length = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(str::to_string)
                    })
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                let mut body = Vec::new();
                let _ = (&mut client).take(length).read_to_end(&mut body);
                let mut forwarded: String = text
                    .trim_end()
                    .split("\r\n")
                    .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                    .map(|l| format!("{l}\r\n"))
                    .collect();
                forwarded.push_str("Connection: close\r\n\r\n");
                let completion = text.starts_with("POST ")
                    && text.lines().next().is_some_and(|l| l.contains("uploadId="));
                let losing = completion
                    && counted
                        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok();
                if losing && let Lost::Request(instead) = lost.as_ref() {
                    instead();
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                }
                let Ok(mut server) = TcpStream::connect(&target) else {
                    return;
                };
                let _ = server.write_all(forwarded.as_bytes());
                let _ = server.write_all(&body);
                let mut answer = Vec::new();
                let _ = server.read_to_end(&mut answer);
                if !losing {
                    let _ = client.write_all(&answer);
                }
                let _ = client.shutdown(Shutdown::Both);
            });
        }
    });
    (endpoint, losses)
}

/// The answer to a completion is lost after Garage assembled the object: the completion is
/// sent again, Garage knows no such upload, and the object, whose ETag is the one its parts
/// make, is taken as written.
#[test]
fn a_completion_whose_answer_is_lost_is_found_stored_by_its_multipart_etag() {
    let g = Garage::shared();
    let direct = store("t-lost", "", &small());
    let (endpoint, losses) = losing_proxy(&g.endpoint, Lost::Answer);
    let mut via = config(g);
    via.endpoint = endpoint;
    let s = S3Storage::with_config(&via, "t-lost", "", &small()).unwrap();
    let bytes = data(3 * PART + 5);
    let mut w = s.create("lost.tar").unwrap();
    write_in_chunks(w.as_mut(), &bytes);
    assert_eq!(w.finish().unwrap(), bytes.len() as u64);
    assert_eq!(losses.load(std::sync::atomic::Ordering::SeqCst), 1);
    let mut back = Vec::new();
    direct
        .open("lost.tar")
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == bytes, "read back {} bytes, differ", back.len());
    assert!(uploads(&direct).is_empty());
}

/// The completion never reached Garage, and meanwhile the upload was aborted and other bytes
/// stored under the key: the completion sent again finds no such upload, the object there is
/// not the one its parts make, and the writer fails naming the object.
#[test]
fn a_lost_completion_whose_key_holds_another_object_is_a_failure() {
    let g = Garage::shared();
    let direct = std::sync::Arc::new(store("t-lost-other", "", &small()));
    let meddler = direct.clone();
    let instead = move || {
        meddler.abort_unfinished("").unwrap();
        meddler.put("other.tar", b"someone else's bytes").unwrap();
    };
    let (endpoint, losses) = losing_proxy(&g.endpoint, Lost::Request(Box::new(instead)));
    let mut via = config(g);
    via.endpoint = endpoint;
    let s = S3Storage::with_config(&via, "t-lost-other", "", &small()).unwrap();
    let mut w = s.create("other.tar").unwrap();
    write_in_chunks(w.as_mut(), &data(3 * PART + 5));
    let e = w.finish().unwrap_err().to_string();
    assert_eq!(losses.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        e.starts_with("s3://t-lost-other/other.tar: ") && e.contains("NoSuchUpload"),
        "{e}"
    );
    assert!(direct.holds("other.tar", b"someone else's bytes").unwrap());
}

/// As above, but what is stored instead is a multipart object of as many parts, of the same
/// sizes, one byte changed: only the MD5 of every part's MD5 tells it from ours, and it is
/// refused all the same.
#[test]
fn a_lost_completion_whose_key_holds_a_near_copy_of_as_many_parts_is_a_failure() {
    let g = Garage::shared();
    let direct = std::sync::Arc::new(store("t-lost-near", "", &small()));
    let ours = data(3 * PART + 5);
    let mut near = ours.clone();
    near[PART + 7] ^= 1;
    let meddler = direct.clone();
    let stored = near.clone();
    let instead = move || {
        meddler.abort_unfinished("").unwrap();
        let mut w = meddler.create("near.tar").unwrap();
        write_in_chunks(w.as_mut(), &stored);
        w.finish().unwrap();
    };
    let (endpoint, losses) = losing_proxy(&g.endpoint, Lost::Request(Box::new(instead)));
    let mut via = config(g);
    via.endpoint = endpoint;
    let s = S3Storage::with_config(&via, "t-lost-near", "", &small()).unwrap();
    let mut w = s.create("near.tar").unwrap();
    write_in_chunks(w.as_mut(), &ours);
    let e = w.finish().unwrap_err().to_string();
    assert_eq!(losses.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        e.starts_with("s3://t-lost-near/near.tar: ") && e.contains("NoSuchUpload"),
        "{e}"
    );
    assert!(direct.holds("near.tar", &near).unwrap());
}

#[test]
fn a_busy_service_is_asked_again_a_bounded_number_of_times() {
    let g = Garage::shared();
    g.bucket("t-busy");
    let mut via = config(g);
    via.endpoint = busy_proxy(&g.endpoint, client::TRIES as usize - 1);
    let s = S3Storage::with_config(&via, "t-busy", "", &small()).unwrap();
    s.put("k", b"after 503s").unwrap();
    assert_eq!(s.size("k").unwrap(), Some(10));

    via.endpoint = busy_proxy(&g.endpoint, client::TRIES as usize);
    let s = S3Storage::with_config(&via, "t-busy", "", &small()).unwrap();
    let e = s.put("k2", b"x").unwrap_err().to_string();
    assert_eq!(e, "s3://t-busy/k2: ServiceUnavailable (HTTP 503)");
}

/// The figure in the notes: 1 GiB streamed with the program's own sizes (8 MiB parts, a
/// 64 MiB budget, 4 senders) and read back through 8 MiB ranges. Not run by default (it
/// writes 1 GiB into Garage's temp dir): `cargo test --lib -- --ignored one_gib`.
#[test]
#[ignore]
fn one_gib_streams_within_the_budget() {
    let s = store("t-one-gib", "", &S3Options::default());
    let chunk = data(1 << 20);
    let mut w = s.create("big.tar").unwrap();
    for _ in 0..1024 {
        w.write_all(&chunk).unwrap();
    }
    assert_eq!(w.finish().unwrap(), 1 << 30);
    assert!(s.budget().peak() <= 64 << 20, "{}", s.budget().peak());
    let mut r = s.open("big.tar").unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    assert_eq!(read, 1 << 30);
    s.remove("big.tar").unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("");
    eprintln!(
        "budget peak {} bytes; test process {hwm}",
        s.budget().peak()
    );
}

/// The keys under `prefix`, in order.
fn keys(s: &S3Storage, prefix: &str) -> Vec<String> {
    s.list(prefix, 10)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[test]
fn a_claim_is_refused_where_anything_is_and_a_new_object_is_never_replaced() {
    let s = store("t-claims", "p", &small());
    let claim = s.claim("dep_1", "owner a").unwrap();
    assert!(claim.starts_with("dep_1/.bbr-agent-run-"), "{claim}");
    let e = s.claim("dep_1", "owner b").unwrap_err().to_string();
    assert!(
        e.contains("s3://t-claims/p/dep_1/") && e.contains("run the backup again"),
        "{e}"
    );
    // An upload in progress and nothing else: in use too.
    let mut w = s.create("dep_2/a.tar").unwrap();
    write_in_chunks(w.as_mut(), &data(2 * PART));
    std::mem::forget(w);
    let e = s.claim("dep_2", "owner b").unwrap_err().to_string();
    assert!(e.contains("run the backup again"), "{e}");
    // A second claim put beside the first, as a run in the same second does: the later
    // claimant's listing sees two and backs off, removing its own.
    s.put("dep_3/.bbr-agent-run-0", b"owner a").unwrap();
    let e = s
        .claim_after_check("dep_3", "owner b")
        .unwrap_err()
        .to_string();
    assert!(e.contains("run the backup again"), "{e}");
    assert_eq!(keys(&s, "dep_3/"), ["dep_3/.bbr-agent-run-0"]);
    // Another run of the same second found the directory free too, and finished between this
    // run's check and its claim: its claim gone, its backup there. This run backs off,
    // leaving that backup as it was and no claim of its own.
    s.create_dir("dep_4").unwrap();
    s.put_new("dep_4/db-0-store.tar", b"the other run's tar")
        .unwrap();
    s.put_new("dep_4/metadata", b"the other run's metadata")
        .unwrap();
    let e = s
        .claim_after_check("dep_4", "owner b")
        .unwrap_err()
        .to_string();
    assert!(e.contains("a backup is stored there already"), "{e}");
    assert_eq!(
        keys(&s, "dep_4/"),
        ["dep_4/db-0-store.tar", "dep_4/metadata"]
    );
    // A new object written again with the same bytes (a retried PUT) is fine. (AWS refuses
    // other bytes with a 412; Garage 2.5 ignores `If-None-Match` on a PUT, so the claim's
    // listing is what holds there.)
    s.put_new("dep_1/metadata", b"first").unwrap();
    s.put_new("dep_1/metadata", b"first").unwrap();
    assert!(s.holds("dep_1/metadata", b"first").unwrap());
    assert!(!s.holds("dep_1/metadata", b"firs").unwrap());
}
