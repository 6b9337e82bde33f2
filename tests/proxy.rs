//! The branch proxy end to end, in-process on loopback: a test origin that
//! speaks PeerDist (content information built with `pccrc::build`, or lies on
//! purpose), the daemon started with `App::start`, and real HTTP clients.

mod common;

use common::*;

#[tokio::test]
async fn cold_download_is_rebuilt_from_origin_ranges_and_byte_identical() {
    let origin = Origin::start().await;
    let data = content(3 * MIB + 12_345, 1);
    origin.put("/big.bin", Object::peerdist(data.clone()));
    let proxy = Proxy::reverse(&origin).await;

    let (status, headers, body) = fetch(proxy.addr(), "/big.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), data.len());
    assert!(body == data, "body differs from the origin object");
    assert_eq!(headers[header::CONTENT_LENGTH], data.len().to_string());
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-test");
    assert_eq!(headers[header::ETAG], "\"v1\"");
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
    assert!(headers.get("x-p2p-peerdist").is_none());
    assert!(headers[header::VIA]
        .to_str()
        .unwrap()
        .contains("branchcache"));
    // WAN: the object once (in ranges) plus its content information.
    assert_eq!(origin.body_bytes(), data.len() as u64);
    assert!(origin.state.range_requests.load(Ordering::SeqCst) >= 1);
    let m = proxy.metrics();
    assert_eq!(
        metric(&m, "branchcache_proxy_requests_total{outcome=\"miss\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "branchcache_proxy_served_bytes_total{source=\"origin\"}"
        ),
        data.len() as u64
    );
    assert_eq!(
        metric(&m, "branchcache_proxy_wan_bytes_total{kind=\"body\"}"),
        data.len() as u64
    );
    assert_eq!(
        metric(
            &m,
            "branchcache_proxy_wan_bytes_total{kind=\"content_information\"}"
        ),
        origin.ci_bytes()
    );
}

#[tokio::test]
async fn range_requests_to_origin_are_missing_data_requests_without_peerdist() {
    let origin = Origin::start().await;
    let data = content(200_000, 2);
    origin.put("/o", Object::peerdist(data.clone()));
    let proxy = Proxy::reverse(&origin).await;
    let (status, _, body) = fetch(proxy.addr(), "/o").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    let h = origin
        .state
        .last_range_headers
        .lock()
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(h["x-p2p-peerdist"], "Version=1.1, MissingDataRequest=true");
    assert!(!h[header::ACCEPT_ENCODING]
        .to_str()
        .unwrap()
        .contains("peerdist"));
    assert!(h.get("x-p2p-peerdistex").is_none());
    assert_eq!(h[header::IF_RANGE], "\"v1\"");
}

#[tokio::test]
async fn multi_segment_object_crosses_segment_boundaries() {
    let origin = Origin::start().await;
    let data = content(32 * MIB + 70_001, 3);
    origin.put("/iso", Object::peerdist(data.clone()));
    let proxy = Proxy::reverse(&origin).await;
    let (status, _, body) = fetch(proxy.addr(), "/iso").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "body differs");
    assert_eq!(origin.body_bytes(), data.len() as u64);
}

#[tokio::test]
async fn content_information_v2_objects_are_served() {
    let origin = Origin::start().await;
    let data = content(700_000, 4);
    origin.put("/v2", Object::v2(data.clone()));
    let proxy = Proxy::reverse(&origin).await;
    let (status, _, body) = fetch(proxy.addr(), "/v2").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    assert_eq!(origin.body_bytes(), data.len() as u64);
}

#[tokio::test]
async fn single_range_is_served_from_segments_with_206() {
    let origin = Origin::start().await;
    let data = content(1_000_000, 5);
    origin.put("/r", Object::peerdist(data.clone()));
    let proxy = Proxy::reverse(&origin).await;
    for (range, want) in [
        ("bytes=100000-200000", 100_000..200_001),
        ("bytes=999990-", 999_990..1_000_000),
        ("bytes=-10", 999_990..1_000_000),
        ("bytes=0-0", 0..1),
    ] {
        let req = get("/r")
            .header(header::RANGE, range)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, headers, body) = send(proxy.addr(), req).await.unwrap();
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            headers[header::CONTENT_RANGE],
            format!("bytes {}-{}/{}", want.start, want.end - 1, data.len())
        );
        assert!(body == data.slice(want.clone()), "{range}");
    }
    let req = get("/r")
        .header(header::RANGE, "bytes=2000000-")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, _) = send(proxy.addr(), req).await.unwrap();
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers[header::CONTENT_RANGE], "bytes */1000000");
}

#[tokio::test]
async fn range_only_fetches_the_segments_it_touches() {
    let origin = Origin::start().await;
    let data = content(32 * MIB + 300_000, 6);
    origin.put("/two", Object::peerdist(data.clone()));
    let proxy = Proxy::reverse(&origin).await;
    let start = 32 * MIB + 1000;
    let req = get("/two")
        .header(header::RANGE, format!("bytes={start}-{}", start + 99))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(proxy.addr(), req).await.unwrap();
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert!(body == data.slice(start..start + 100));
    // Only the second (short) segment was fetched.
    assert_eq!(origin.body_bytes(), 300_000);
}

#[tokio::test]
async fn head_passes_through_with_length() {
    let origin = Origin::start().await;
    let data = content(500_000, 7);
    origin.put("/h", Object::peerdist(data.clone()));
    let proxy = Proxy::reverse(&origin).await;
    let req = get("/h")
        .method(Method::HEAD)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = send(proxy.addr(), req).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_LENGTH], "500000");
    assert!(body.is_empty());
    assert_eq!(origin.body_bytes(), 0);
}

#[tokio::test]
async fn plain_origin_responses_and_posts_stream_through_unchanged() {
    let origin = Origin::start().await;
    let data = content(300_000, 8);
    origin.put(
        "/plain",
        Object {
            data: data.clone(),
            ci: None,
        },
    );
    let proxy = Proxy::reverse(&origin).await;
    let (status, headers, body) = fetch(proxy.addr(), "/plain").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    assert!(headers[header::VIA]
        .to_str()
        .unwrap()
        .contains("branchcache"));

    let req = get("/echo")
        .method(Method::POST)
        .body(Full::new(Bytes::from_static(b"hello origin")))
        .unwrap();
    let (status, headers, body) = send(proxy.addr(), req).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-echo"], "1");
    assert_eq!(&body[..], b"hello origin");

    let (status, _, _) = fetch(proxy.addr(), "/missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let m = proxy.metrics();
    assert_eq!(
        metric(&m, "branchcache_proxy_requests_total{outcome=\"bypass\"}"),
        3,
        "{m}"
    );
}

#[tokio::test]
async fn client_speaking_peerdist_gets_the_origin_answer_untouched() {
    let origin = Origin::start().await;
    let data = content(200_000, 9);
    origin.put("/pd", Object::peerdist(data.clone()));
    let proxy = Proxy::reverse(&origin).await;
    let req = get("/pd")
        .header(header::ACCEPT_ENCODING, "peerdist")
        .header("x-p2p-peerdist", "Version=1.1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = send(proxy.addr(), req).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_ENCODING], "peerdist");
    assert_eq!(body.len() as u64, origin.ci_bytes());
}

#[tokio::test]
async fn lying_origin_never_yields_wrong_bytes() {
    let origin = Origin::start().await;
    let claimed = content(400_000, 10);
    let actual = content(400_000, 11);
    origin.put("/liar", Object::lying(claimed.clone(), actual.clone()));
    let proxy = Proxy::reverse(&origin).await;
    match send(
        proxy.addr(),
        get("/liar").body(Full::new(Bytes::new())).unwrap(),
    )
    .await
    {
        Ok((status, _, body)) if status == StatusCode::OK => {
            // Fallback to a plain GET: the origin's real bytes.
            assert!(body == actual, "served bytes that are not the origin's");
        }
        Ok((status, _, _)) => assert_eq!(status, StatusCode::BAD_GATEWAY),
        Err(_) => {} // aborted body: acceptable, never wrong bytes
    }
}

#[tokio::test]
async fn garbage_content_information_falls_back_to_plain_get() {
    let origin = Origin::start().await;
    let data = content(150_000, 12);
    origin.put(
        "/junk",
        Object {
            data: data.clone(),
            ci: Some(Bytes::from_static(b"\x00\x01 definitely not a CI")),
        },
    );
    let proxy = Proxy::reverse(&origin).await;
    let (status, headers, body) = fetch(proxy.addr(), "/junk").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
}

#[tokio::test]
async fn origin_down_is_a_502_with_a_short_body() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = Proxy::start(&format!("upstream = \"http://{dead}\"")).await;
    let (status, _, body) = fetch(proxy.addr(), "/anything").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("origin"), "{text}");
    let m = proxy.metrics();
    assert_eq!(
        metric(&m, "branchcache_proxy_requests_total{outcome=\"error\"}"),
        1,
        "{m}"
    );
}

#[tokio::test]
async fn forward_mode_serves_absolute_form_requests() {
    let origin = Origin::start().await;
    let data = content(250_000, 13);
    origin.put("/fwd", Object::peerdist(data.clone()));
    let proxy = Proxy::start("forward = true").await;
    let req = Request::builder()
        .uri(format!("http://{}/fwd", origin.addr))
        .header(header::HOST, origin.addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(proxy.addr(), req).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    assert_eq!(origin.body_bytes(), data.len() as u64);

    // Without an upstream, origin-form requests have nowhere to go.
    let (status, _, _) = fetch(proxy.addr(), "/fwd").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn connect_is_refused_when_forwarding_is_off() {
    let proxy = Proxy::start("upstream = \"http://127.0.0.1:9\"\nforward = false").await;
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("127.0.0.1:9")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, _) = send(proxy.addr(), req).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn connect_tunnels_bytes_to_the_target() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An echo server as the tunnel target.
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
    });
    let proxy = Proxy::start("forward = true").await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(format!("CONNECT {echo_addr} HTTP/1.1\r\nHost: {echo_addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello");
}

#[tokio::test]
async fn concurrent_cold_clients_cause_one_wan_copy() {
    let origin = Origin::start().await;
    let data = content(2 * MIB + 777, 14);
    origin.put("/hot", Object::peerdist(data.clone()));
    // Range answers wait until all 8 clients have their content information,
    // so every client is in flight while the segment is being fetched.
    origin.state.hold_ranges_until.store(8, Ordering::SeqCst);
    let proxy = Proxy::reverse(&origin).await;
    let addr = proxy.addr();
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(async move { fetch(addr, "/hot").await }))
        .collect();
    for c in clients {
        let (status, _, body) = c.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(body == data);
    }
    assert_eq!(origin.body_bytes(), data.len() as u64);
}

/// Wait until the store holds every block of `len` bytes (writes land
/// asynchronously, after the client got its bytes).

#[tokio::test]
async fn second_download_costs_only_the_content_information() {
    let origin = Origin::start().await;
    let data = content(3 * MIB + 4321, 20);
    origin.put("/warm", Object::peerdist(data.clone()));
    let proxy = Proxy::reverse(&origin).await;
    let (_, _, first) = fetch(proxy.addr(), "/warm").await;
    assert!(first == data);
    wait_stored(&proxy, data.len()).await;
    let body_after_first = origin.body_bytes();
    let ci_after_first = origin.ci_bytes();
    assert_eq!(body_after_first, data.len() as u64);

    let (status, _, second) = fetch(proxy.addr(), "/warm").await;
    assert_eq!(status, StatusCode::OK);
    assert!(second == data);
    assert_eq!(
        origin.body_bytes(),
        body_after_first,
        "second download hit the WAN"
    );
    assert_eq!(origin.ci_bytes(), 2 * ci_after_first);
    let m = proxy.metrics();
    assert_eq!(
        metric(&m, "branchcache_proxy_requests_total{outcome=\"hit\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        metric(&m, "branchcache_proxy_served_bytes_total{source=\"store\"}"),
        data.len() as u64
    );
}

#[tokio::test]
async fn restart_keeps_the_store_warm() {
    let origin = Origin::start().await;
    let data = content(MIB + 99, 21);
    origin.put("/keep", Object::peerdist(data.clone()));
    let proxy = Proxy::reverse(&origin).await;
    let (_, _, first) = fetch(proxy.addr(), "/keep").await;
    assert!(first == data);
    wait_stored(&proxy, data.len()).await;
    let dir = proxy.stop().await;

    let proxy = Proxy::start_in(dir, &format!("upstream = \"http://{}\"", origin.addr)).await;
    let (status, _, again) = fetch(proxy.addr(), "/keep").await;
    assert_eq!(status, StatusCode::OK);
    assert!(again == data);
    assert_eq!(
        origin.body_bytes(),
        data.len() as u64,
        "restart lost the cache"
    );
}

#[tokio::test]
async fn corrupt_block_on_disk_is_refetched_and_served_correctly() {
    let origin = Origin::start().await;
    let data = content(5 * 65_536 + 10, 22);
    origin.put("/rot", Object::peerdist(data.clone()));
    let proxy = Proxy::reverse(&origin).await;
    let (_, _, first) = fetch(proxy.addr(), "/rot").await;
    assert!(first == data);
    wait_stored(&proxy, data.len()).await;

    // Flip one byte of block 2 in the segment's data file.
    let data_dir = proxy._dir.path().join("store").join("data");
    let seg_file = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg_file).unwrap();
    bytes[2 * 65_536 + 17] ^= 0xFF;
    std::fs::write(&seg_file, &bytes).unwrap();

    let (status, _, second) = fetch(proxy.addr(), "/rot").await;
    assert_eq!(status, StatusCode::OK);
    assert!(second == data, "served corrupt bytes");
    // Exactly the corrupt block came over the WAN again.
    assert_eq!(origin.body_bytes(), data.len() as u64 + 65_536);
    let m = proxy.metrics();
    assert_eq!(
        metric(&m, "branchcache_proxy_requests_total{outcome=\"partial\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        metric(&m, "branchcache_store_verify_failures_total"),
        1,
        "{m}"
    );
}

#[tokio::test]
async fn origin_publisher_proxy_chain_costs_wan_once_then_only_content_information() {
    let origin = Origin::start().await;
    let data = content(2 * MIB + 333, 30);
    origin.put(
        "/pub.bin",
        Object {
            data: data.clone(),
            ci: None,
        },
    );
    let pub_dir = tempfile::tempdir().unwrap();
    let pub_toml = format!(
        "[store]\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n[publisher]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\nsecret_file = {:?}\n",
        pub_dir.path().join("store"),
        origin.addr,
        pub_dir.path().join("secret")
    );
    let publisher = App::start(Config::from_toml(&pub_toml, "publisher").unwrap())
        .await
        .unwrap();
    let pub_addr = publisher.publisher_addr.unwrap();
    let proxy = Proxy::start(&format!("upstream = \"http://{pub_addr}\"")).await;

    let (status, headers, first) = fetch(proxy.addr(), "/pub.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(first == data, "first download differs");
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
    wait_stored(&proxy, data.len()).await;
    let m = proxy.metrics();
    let wan_body = metric(&m, "branchcache_proxy_wan_bytes_total{kind=\"body\"}");
    let wan_ci = metric(
        &m,
        "branchcache_proxy_wan_bytes_total{kind=\"content_information\"}",
    );
    assert_eq!(wan_body, data.len() as u64, "{m}");
    assert!(wan_ci > 0 && wan_ci < 4096, "{m}");

    let (status, _, second) = fetch(proxy.addr(), "/pub.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(second == data, "second download differs");
    let m = proxy.metrics();
    assert_eq!(
        metric(&m, "branchcache_proxy_wan_bytes_total{kind=\"body\"}"),
        wan_body,
        "second download fetched body bytes: {m}"
    );
    assert_eq!(
        metric(
            &m,
            "branchcache_proxy_wan_bytes_total{kind=\"content_information\"}"
        ),
        2 * wan_ci
    );
    assert_eq!(
        metric(&m, "branchcache_proxy_requests_total{outcome=\"hit\"}"),
        1,
        "{m}"
    );
    publisher.shutdown().await;
}

#[tokio::test]
async fn https_upstream_is_trusted_through_extra_ca_file_only() {
    let (origin, pem) = Origin::start_tls().await;
    let data = content(400_000, 31);
    origin.put("/tls", Object::peerdist(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();

    let proxy = Proxy::start(&format!(
        "upstream = \"https://{}\"\nextra_ca_file = {:?}",
        origin.addr, ca
    ))
    .await;
    let (status, _, body) = fetch(proxy.addr(), "/tls").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    assert_eq!(origin.body_bytes(), data.len() as u64);

    // Without the extra CA the self-signed origin is refused: 502, no bytes.
    let untrusted = Proxy::start(&format!("upstream = \"https://{}\"", origin.addr)).await;
    let (status, _, _) = fetch(untrusted.addr(), "/tls").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

/// An origin on raw TCP that answers each request with the first `sent`
/// bytes of what it should send and then goes silent, connection open: a
/// peerdist request gets `ci` whole (when given), a `Range` request a 206
/// for that range, any other request a 200 for `data`.
async fn stalling_origin(ci: Option<Bytes>, data: Bytes, sent: usize) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (ci, data) = (ci.clone(), data.clone());
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let range = head.lines().find_map(|l| l.strip_prefix("range: bytes="));
                    if let (Some(ci), None, true) = (&ci, range, head.contains("peerdist")) {
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-encoding: peerdist\r\netag: \"s\"\r\n\
                             x-p2p-peerdist: Version=1.1, ContentLength={}\r\ncontent-length: {}\r\n\r\n",
                            data.len(),
                            ci.len()
                        );
                        sock.write_all(answer.as_bytes()).await.unwrap();
                        sock.write_all(ci).await.unwrap();
                        continue;
                    }
                    let (status, extra, body) = match range {
                        Some(r) => {
                            let (a, b) = r.trim().split_once('-').unwrap();
                            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                            let cr = format!("content-range: bytes {a}-{b}/{}\r\n", data.len());
                            ("206 Partial Content", cr, data.slice(a..=b))
                        }
                        None => ("200 OK", String::new(), data.clone()),
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\n\r\n",
                        body.len()
                    );
                    sock.write_all(answer.as_bytes()).await.unwrap();
                    let _ = sock.write_all(&body[..sent.min(body.len())]).await;
                    // Silent from here on, with the connection open.
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    return;
                }
            });
        }
    });
    addr
}

/// Generous bound for a stalled exchange to end (the idle timeout is 1 s).
const STALL_BOUND: std::time::Duration = std::time::Duration::from_secs(30);

/// `GET /stall` through a proxy whose origin ([`stalling_origin`]) goes
/// silent after 100 KB; the result (which must come within [`STALL_BOUND`])
/// and the proxy's metrics afterwards.
async fn get_from_stalling_origin(
    ci: Option<Bytes>,
    data: Bytes,
) -> (Result<(StatusCode, http::HeaderMap, Bytes), String>, String) {
    let origin = stalling_origin(ci, data, 100_000).await;
    // 1 s, not less: a CPU-starved CI machine can leave the first 100 KB
    // hundreds of milliseconds apart without a stall.
    let proxy = Proxy::start(&format!(
        "upstream = \"http://{origin}\"\nbody_idle_timeout = \"1s\""
    ))
    .await;
    let got = tokio::time::timeout(
        STALL_BOUND,
        send(
            proxy.addr(),
            get("/stall").body(Full::new(Bytes::new())).unwrap(),
        ),
    )
    .await
    .expect("the stalled origin held the client forever");
    (got, proxy.metrics())
}

#[tokio::test]
async fn a_pass_through_body_that_stalls_is_cut_off_after_body_idle_timeout() {
    let (got, m) = get_from_stalling_origin(None, content(1_000_000, 31)).await;
    assert!(got.is_err(), "a truncated body must not end cleanly");
    assert_eq!(
        metric(
            &m,
            "branchcache_proxy_origin_errors_total{kind=\"timeout\"}"
        ),
        1,
        "{m}"
    );
}

#[tokio::test]
async fn an_origin_range_that_stalls_ends_the_fetch_instead_of_hanging_it() {
    let data = content(400_000, 32);
    let ci = Object::peerdist(data.clone()).ci;
    let (got, m) = get_from_stalling_origin(ci, data).await;
    // The only source is silent: an error status or a cut-off body, never
    // a complete answer or wrong bytes.
    if let Ok((status, _, body)) = got {
        assert_ne!(status, StatusCode::OK, "{} bytes", body.len());
    }
    assert!(
        metric(
            &m,
            "branchcache_proxy_origin_errors_total{kind=\"timeout\"}"
        ) >= 1,
        "{m}"
    );
}
