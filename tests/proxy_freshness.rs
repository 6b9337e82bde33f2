//! The proxy as an RFC 9111 cache of content information, end to end on
//! loopback: a real test origin (or origin + publisher daemon) and the proxy
//! started with `App::start`. Fresh entries answer with no origin request at
//! all; stale ones revalidate (`304` → reuse, new `ETag` → new content);
//! `no-store`, `Vary: Cookie` are never remembered; a client's `no-cache`
//! forces revalidation and its own conditionals are answered from the entry.

mod common;

use common::*;

fn cache_control(origin: &Origin, path: &str, value: &str) {
    origin.state.extra_headers.lock().unwrap().insert(
        path.to_string(),
        vec![("cache-control".to_string(), value.to_string())],
    );
}

/// Fail with the whole metrics text unless `name` (with labels) is `want`.
fn assert_metric(m: &str, name: &str, want: u64) {
    assert_eq!(metric(m, name), want, "{name} in\n{m}");
}

/// Make the test origin answer conditional requests (304 on a match).
fn honour_conditionals(origin: &Origin) {
    origin
        .state
        .honour_conditionals
        .store(true, Ordering::SeqCst);
}

fn requests(origin: &Origin) -> u64 {
    origin.state.requests.load(Ordering::SeqCst)
}

/// A proxy in front of `origin` serving `data` at `path` with
/// `max-age=3600`, downloaded once (byte-identical) and fully stored.
async fn warm_fresh_object(origin: &Origin, path: &str, data: &Bytes) -> Proxy {
    origin.put(path, Object::peerdist(data.clone()));
    cache_control(origin, path, "max-age=3600");
    let proxy = Proxy::reverse(origin).await;
    let (status, _, first) = fetch(proxy.addr(), path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(first == *data);
    wait_stored(&proxy, data.len()).await;
    proxy
}

#[tokio::test]
async fn fresh_entry_is_served_with_zero_origin_requests_and_an_age() {
    let origin = Origin::start().await;
    let data = content(MIB + 777, 40);
    let proxy = warm_fresh_object(&origin, "/fresh", &data).await;
    let before = requests(&origin);

    for _ in 0..3 {
        let (status, headers, again) = fetch(proxy.addr(), "/fresh").await;
        assert_eq!(status, StatusCode::OK);
        assert!(again == data, "fresh hit differs");
        assert!(headers.contains_key(header::AGE), "{headers:?}");
        assert_eq!(headers[header::CACHE_CONTROL], "max-age=3600");
        assert_eq!(headers[header::ETAG], "\"v1\"");
        assert_eq!(headers[header::CONTENT_LENGTH], data.len().to_string());
        assert!(headers.get(header::CONTENT_ENCODING).is_none());
    }
    // A range of a fresh entry too.
    let req = get("/fresh")
        .header(header::RANGE, "bytes=10-19")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, part) = send(proxy.addr(), req).await.unwrap();
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert!(part == data.slice(10..20));
    assert_eq!(
        requests(&origin),
        before,
        "a fresh hit contacted the origin"
    );

    let m = proxy.metrics();
    assert_metric(&m, "branchcache_proxy_freshness_total{result=\"fresh\"}", 4);
    assert_metric(&m, "branchcache_proxy_freshness_entries", 1);
    assert_metric(&m, "branchcache_proxy_requests_total{outcome=\"hit\"}", 4);
}

#[tokio::test]
async fn stale_entry_revalidates_with_304_and_a_new_etag_brings_new_content() {
    let origin = Origin::start().await;
    honour_conditionals(&origin);
    let v1 = content(300_000, 41);
    origin.put("/doc", Object::peerdist(v1.clone()));
    // Stored (it has a validator) but never fresh: every request revalidates.
    cache_control(&origin, "/doc", "max-age=0");
    let proxy = Proxy::reverse(&origin).await;

    let (_, _, first) = fetch(proxy.addr(), "/doc").await;
    assert!(first == v1);
    wait_stored(&proxy, v1.len()).await;
    let ci_before = origin.state.ci_requests.load(Ordering::SeqCst);
    let body_before = origin.body_bytes();

    let (status, headers, second) = fetch(proxy.addr(), "/doc").await;
    assert_eq!(status, StatusCode::OK);
    assert!(second == v1, "revalidated answer differs");
    assert!(headers.contains_key(header::AGE));
    let seen = origin.state.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen[header::IF_NONE_MATCH], "\"v1\"");
    assert_eq!(origin.state.not_modified.load(Ordering::SeqCst), 1);
    assert_eq!(
        origin.state.ci_requests.load(Ordering::SeqCst),
        ci_before,
        "a 304 should have been enough"
    );
    assert_eq!(origin.body_bytes(), body_before);

    // The object changes: new bytes, new ETag.
    let v2 = content(250_000, 42);
    origin.put("/doc", Object::peerdist(v2.clone()));
    origin
        .state
        .etags
        .lock()
        .unwrap()
        .insert("/doc".into(), "\"v2\"".into());
    let (status, headers, third) = fetch(proxy.addr(), "/doc").await;
    assert_eq!(status, StatusCode::OK);
    assert!(third == v2, "changed object served stale bytes");
    assert_eq!(headers[header::ETAG], "\"v2\"");

    let m = proxy.metrics();
    assert_eq!(
        metric(
            &m,
            "branchcache_proxy_freshness_total{result=\"revalidated\"}"
        ),
        1,
        "{m}"
    );
    assert_metric(
        &m,
        "branchcache_proxy_freshness_total{result=\"changed\"}",
        1,
    );
    assert_metric(&m, "branchcache_proxy_freshness_total{result=\"fresh\"}", 0);
}

#[tokio::test]
async fn no_store_and_vary_cookie_are_never_remembered() {
    let origin = Origin::start().await;
    honour_conditionals(&origin);
    let data = content(200_000, 43);
    origin.put("/secret", Object::peerdist(data.clone()));
    cache_control(&origin, "/secret", "no-store, max-age=3600");
    origin.put("/per-user", Object::peerdist(content(100_000, 44)));
    origin.state.extra_headers.lock().unwrap().insert(
        "/per-user".into(),
        vec![
            ("cache-control".into(), "max-age=3600".into()),
            ("vary".into(), "Accept-Encoding, Cookie".into()),
        ],
    );
    let proxy = Proxy::reverse(&origin).await;

    for path in ["/secret", "/per-user"] {
        let ci0 = origin.state.ci_requests.load(Ordering::SeqCst);
        for _ in 0..2 {
            let (status, _, _) = fetch(proxy.addr(), path).await;
            assert_eq!(status, StatusCode::OK);
            let seen = origin.state.last_headers.lock().unwrap().clone().unwrap();
            assert!(seen.get(header::IF_NONE_MATCH).is_none(), "{path}");
        }
        assert_eq!(
            origin.state.ci_requests.load(Ordering::SeqCst),
            ci0 + 2,
            "{path}: every request must ask the origin"
        );
    }
    let (_, _, again) = fetch(proxy.addr(), "/secret").await;
    assert!(again == data);
    let m = proxy.metrics();
    assert_metric(&m, "branchcache_proxy_freshness_entries", 0);
    assert_metric(&m, "branchcache_proxy_freshness_total{result=\"fresh\"}", 0);
    assert_eq!(
        metric(
            &m,
            "branchcache_proxy_freshness_total{result=\"uncacheable\"}"
        ),
        5,
        "{m}"
    );
}

#[tokio::test]
async fn client_no_cache_revalidates_and_client_conditionals_get_304_from_the_entry() {
    let origin = Origin::start().await;
    honour_conditionals(&origin);
    let data = content(150_000, 45);
    origin.put("/page", Object::peerdist(data.clone()));
    cache_control(&origin, "/page", "max-age=3600");
    let proxy = Proxy::reverse(&origin).await;
    let (_, _, first) = fetch(proxy.addr(), "/page").await;
    assert!(first == data);
    wait_stored(&proxy, data.len()).await;

    // Browser reload: Cache-Control: no-cache must reach the origin as a revalidation.
    let before = requests(&origin);
    let req = get("/page")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(proxy.addr(), req).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    assert_eq!(requests(&origin), before + 1);
    assert_eq!(origin.state.not_modified.load(Ordering::SeqCst), 1);

    // The client's own If-None-Match is answered by the proxy, no origin contact.
    let before = requests(&origin);
    let req = get("/page")
        .header(header::IF_NONE_MATCH, "\"v1\"")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = send(proxy.addr(), req).await.unwrap();
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(headers[header::ETAG], "\"v1\"");
    assert_eq!(requests(&origin), before);
    // A non-matching one gets the full body, still from the entry.
    let req = get("/page")
        .header(header::IF_NONE_MATCH, "\"old\"")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(proxy.addr(), req).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    assert_eq!(requests(&origin), before);
    // Revalidated, 304 and full answers all came from the store.
    let m = proxy.metrics();
    assert_metric(&m, "branchcache_proxy_requests_total{outcome=\"hit\"}", 3);
}

#[tokio::test]
async fn switched_off_freshness_asks_the_origin_every_time() {
    let origin = Origin::start().await;
    let data = content(100_000, 46);
    origin.put("/f", Object::peerdist(data.clone()));
    cache_control(&origin, "/f", "max-age=3600");
    let proxy = Proxy::start(&format!(
        "upstream = \"http://{}\"\nfreshness = false",
        origin.addr
    ))
    .await;
    for _ in 0..2 {
        let (_, _, body) = fetch(proxy.addr(), "/f").await;
        assert!(body == data);
    }
    assert_eq!(origin.state.ci_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn accept_encoding_sends_peerdist_first_then_the_clients_codings() {
    let origin = Origin::start().await;
    // A plain origin (no content information): the client's codings matter to it.
    origin.put(
        "/plain",
        Object {
            data: content(1000, 47),
            ci: None,
        },
    );
    let proxy = Proxy::reverse(&origin).await;
    let req = get("/plain")
        .header(header::ACCEPT_ENCODING, "gzip, br;q=0.9")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, _) = send(proxy.addr(), req).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let seen = origin.state.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen[header::ACCEPT_ENCODING], "peerdist, gzip, br;q=0.9");
    // Without a client Accept-Encoding: peerdist alone.
    let (_, _, _) = fetch(proxy.addr(), "/plain").await;
    let seen = origin.state.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen[header::ACCEPT_ENCODING], "peerdist");
}

/// A publisher daemon (in process) in front of `origin`; keep the directory
/// alive as long as the daemon.
async fn publisher_for(origin: &Origin) -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[store]\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n[publisher]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\nsecret_file = {:?}\n",
        dir.path().join("store"),
        origin.addr,
        dir.path().join("secret")
    );
    let app = App::start(Config::from_toml(&toml, "publisher").unwrap())
        .await
        .unwrap();
    (app, dir)
}

#[tokio::test]
async fn publisher_relays_the_origins_cache_control_so_fresh_hits_skip_the_wan() {
    let origin = Origin::start().await;
    let data = content(2 * MIB + 5, 48);
    origin.put(
        "/pub.bin",
        Object {
            data: data.clone(),
            ci: None,
        },
    );
    cache_control(&origin, "/pub.bin", "max-age=600");
    let (publisher, _pub_dir) = publisher_for(&origin).await;
    let pub_addr = publisher.publisher_addr.unwrap();
    let proxy = Proxy::start(&format!("upstream = \"http://{pub_addr}\"")).await;

    let (status, _, first) = fetch(proxy.addr(), "/pub.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(first == data);
    wait_stored(&proxy, data.len()).await;
    let before = requests(&origin);
    let (status, headers, second) = fetch(proxy.addr(), "/pub.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(second == data);
    assert_eq!(headers[header::CACHE_CONTROL], "max-age=600");
    assert_eq!(requests(&origin), before, "fresh hit reached the origin");
    let m = proxy.metrics();
    assert_metric(&m, "branchcache_proxy_freshness_total{result=\"fresh\"}", 1);
    publisher.shutdown().await;
}

#[tokio::test]
async fn stale_entry_through_a_publisher_revalidates_with_the_origins_304() {
    let origin = Origin::start().await;
    honour_conditionals(&origin);
    let data = content(MIB + 3, 49);
    origin.put(
        "/stale.bin",
        Object {
            data: data.clone(),
            ci: None,
        },
    );
    cache_control(&origin, "/stale.bin", "max-age=0");
    let (publisher, _pub_dir) = publisher_for(&origin).await;
    let pub_addr = publisher.publisher_addr.unwrap();
    let proxy = Proxy::start(&format!("upstream = \"http://{pub_addr}\"")).await;

    let (_, _, first) = fetch(proxy.addr(), "/stale.bin").await;
    assert!(first == data);
    wait_stored(&proxy, data.len()).await;
    let body_before = origin.body_bytes();
    // The publisher leaves the conditional to the origin, whose 304 comes back.
    let (status, _, second) = fetch(proxy.addr(), "/stale.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(second == data);
    assert_eq!(origin.state.not_modified.load(Ordering::SeqCst), 1);
    assert_eq!(
        origin.body_bytes(),
        body_before,
        "revalidation moved the body"
    );
    let m = proxy.metrics();
    assert_eq!(
        metric(
            &m,
            "branchcache_proxy_freshness_total{result=\"revalidated\"}"
        ),
        1,
        "{m}"
    );
    assert_metric(&m, "branchcache_proxy_requests_total{outcome=\"hit\"}", 1);
    publisher.shutdown().await;
}

/// One request written raw, one response read: status line, headers in
/// order (names lower-case), body (by Content-Length; none for 304).
async fn raw_exchange(addr: SocketAddr, req: &str) -> (String, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the head ended");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_string();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let len = if status.contains(" 304 ") { 0 } else { len };
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut chunk = vec![0u8; 65536];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the body ended");
        body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(body.len(), len, "more bytes than Content-Length");
    (status, headers, body)
}

/// The fresh-hit answer written straight to the socket (plain keep-alive
/// GETs) is the one hyper's path gives (`Connection: close` makes the
/// direct path decline): same status, same headers but `date`/`age`/
/// `connection`, same body; for full, ranged and conditional requests; and
/// both are counted as hits.
#[tokio::test]
async fn direct_fresh_hits_answer_exactly_as_the_hyper_path() {
    let origin = Origin::start().await;
    let data = content(300 * 1024 + 5, 41);
    let proxy = warm_fresh_object(&origin, "/same", &data).await;
    // A one-block object (answered from the block without a body stream).
    let small = content(10_000, 42);
    origin.put("/small", Object::peerdist(small.clone()));
    cache_control(&origin, "/small", "max-age=3600");
    assert!(fetch(proxy.addr(), "/small").await.2 == small);
    wait_stored(&proxy, data.len() + 65_536).await;
    let before = requests(&origin);
    let m = proxy.metrics();
    let hits0 = metric(&m, "branchcache_proxy_requests_total{outcome=\"hit\"}");
    let direct0 = metric(&m, "branchcache_proxy_direct_responses_total");

    let cases: [(&str, &str, StatusCode, Bytes); 6] = [
        ("/same", "", StatusCode::OK, data.clone()),
        (
            "/same",
            "Range: bytes=70000-140000\r\n",
            StatusCode::PARTIAL_CONTENT,
            data.slice(70000..140001),
        ),
        (
            "/same",
            "Range: bytes=-10\r\n",
            StatusCode::PARTIAL_CONTENT,
            data.slice(data.len() - 10..),
        ),
        (
            "/same",
            "If-None-Match: \"v1\"\r\n",
            StatusCode::NOT_MODIFIED,
            Bytes::new(),
        ),
        ("/small", "", StatusCode::OK, small.clone()),
        (
            "/small",
            "Range: bytes=5-9\r\n",
            StatusCode::PARTIAL_CONTENT,
            small.slice(5..10),
        ),
    ];
    let skip = ["date", "age", "connection"];
    for (path, extra, want_status, want_body) in cases {
        let direct = raw_exchange(
            proxy.addr(),
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n"),
        )
        .await;
        let hyper = raw_exchange(
            proxy.addr(),
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n"),
        )
        .await;
        assert!(
            direct
                .0
                .starts_with(&format!("HTTP/1.1 {}", want_status.as_u16())),
            "{extra}: {}",
            direct.0
        );
        assert_eq!(direct.0, hyper.0, "{extra}");
        let strip = |h: &[(String, String)]| {
            let mut v: Vec<(String, String)> = h
                .iter()
                .filter(|(n, _)| !skip.contains(&n.as_str()))
                .cloned()
                .collect();
            v.sort();
            v
        };
        assert_eq!(strip(&direct.1), strip(&hyper.1), "{extra}");
        for (name, _) in [&direct.1, &hyper.1].into_iter().flatten() {
            assert_ne!(name, "content-encoding", "{extra}");
        }
        assert!(
            direct.1.iter().any(|(n, _)| n == "date"),
            "{extra}: no date"
        );
        assert!(direct.1.iter().any(|(n, _)| n == "age"), "{extra}: no age");
        assert!(direct.2 == want_body, "{extra}: direct body differs");
        assert!(hyper.2 == want_body, "{extra}: hyper body differs");
    }
    assert_eq!(
        requests(&origin),
        before,
        "a fresh hit contacted the origin"
    );
    let m = proxy.metrics();
    assert_eq!(
        metric(&m, "branchcache_proxy_requests_total{outcome=\"hit\"}") - hits0,
        12,
        "{m}"
    );
    assert_eq!(
        metric(&m, "branchcache_proxy_direct_responses_total") - direct0,
        6,
        "the plain GETs were not answered by the direct path: {m}"
    );
}
