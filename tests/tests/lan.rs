//! ringcast on a home LAN, checked by real clients: an SSDP control point
//! (gssdp-discover, async-upnp-client's `upnp-client`) finds the DLNA
//! MediaServer and browses it, ffprobe and VLC play what it lists, an RTP
//! multicast output decodes on another host, byebye goes out on SIGTERM,
//! `/metrics` parses with the Prometheus reference parser and agrees with
//! what readers received, and a hostile LAN host (an M-SEARCH flood,
//! malformed SOAP, a huge Browse) neither stops a stream nor costs memory.
//!
//! Every test builds its own [`Lanbed`] (three namespaces: a switch, the
//! server with ringcast at 192.168.60.10, a client at 192.168.60.20; deleted
//! on drop) and needs root. The Python tools come from `target/pyenv`, which
//! `tests/run` makes.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringcast::lan::ssdp::{ANSWERS_BURST, ANSWERS_PER_S, SEARCHER_ANSWERS_PER_S};
use ringcast_tests::daemon::json_u64;
use ringcast_tests::http::raw_request;
use ringcast_tests::lanbed::{m_search, ssdp_header, Datagram, Host, Lanbed, SsdpListener};
use ringcast_tests::reader::End;
use ringcast_tests::*;

const MEDIA_SERVER: &str = "urn:schemas-upnp-org:device:MediaServer:1";
const CONTENT_DIRECTORY: &str = "urn:schemas-upnp-org:service:ContentDirectory:1";
const CONNECTION_MANAGER: &str = "urn:schemas-upnp-org:service:ConnectionManager:1";
const CD_CONTROL: &str = "/dlna/control/ContentDirectory";
const DESCRIPTION: &str = "/dlna/description.xml";

/// `--channel NAME=file:...` for each name (all the default test stream).
fn channel_args(names: &[&str]) -> Vec<String> {
    let path = make_ts(TsSpec::default());
    names
        .iter()
        .flat_map(|n| {
            [
                "--channel".to_string(),
                format!("{n}=file:{}", path.display()),
            ]
        })
        .collect()
}

fn args_with(names: &[&str], extra: &[&str]) -> Vec<String> {
    let mut args = channel_args(names);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The DLNA UUID from `/status` (`node.dlna_uuid`), without a `uuid:` prefix.
fn dlna_uuid(daemon: &Daemon) -> String {
    let status = daemon.status_json();
    let uuid = status["node"]["dlna_uuid"]
        .as_str()
        .unwrap_or_else(|| panic!("no node.dlna_uuid in /status: {status}"));
    let uuid = uuid.strip_prefix("uuid:").unwrap_or(uuid).to_string();
    assert_eq!(uuid.len(), 36, "node.dlna_uuid {uuid:?} is not a UUID");
    uuid
}

/// The five notification types of a MediaServer with its two services, and
/// the USN that goes with each (UDA 1.1 §1.1.2).
fn expected_nts(uuid: &str) -> Vec<(String, String)> {
    let udn = format!("uuid:{uuid}");
    vec![
        ("upnp:rootdevice".into(), format!("{udn}::upnp:rootdevice")),
        (udn.clone(), udn.clone()),
        (MEDIA_SERVER.into(), format!("{udn}::{MEDIA_SERVER}")),
        (
            CONTENT_DIRECTORY.into(),
            format!("{udn}::{CONTENT_DIRECTORY}"),
        ),
        (
            CONNECTION_MANAGER.into(),
            format!("{udn}::{CONNECTION_MANAGER}"),
        ),
    ]
}

/// One raw HTTP exchange from the client host to ringcast's LAN address.
fn client_raw(bed: &Lanbed, request: Vec<u8>, head_only: bool) -> Result<HttpResponse, String> {
    raw_from(bed, Host::Client, bed.server_http(), request, head_only)
}

/// One raw HTTP exchange from `host` to `addr`.
fn raw_from(
    bed: &Lanbed,
    host: Host,
    addr: SocketAddr,
    request: Vec<u8>,
    head_only: bool,
) -> Result<HttpResponse, String> {
    bed.run_on(host, move || {
        raw_request(addr, &request, head_only, Duration::from_secs(10))
    })
}

/// `METHOD path` from the client host (no body).
fn client_request(bed: &Lanbed, method: &str, path: &str) -> HttpResponse {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringcast-tests\r\nConnection: close\r\n\r\n",
        bed.server_http()
    );
    client_raw(bed, request.into_bytes(), method == "HEAD")
        .unwrap_or_else(|e| panic!("{method} {path} from the client: {e}"))
}

/// A SOAP envelope for `action` of `service` (a full service type URN).
fn soap_envelope(service: &str, action: &str, args: &[(&str, &str)]) -> String {
    let args: String = args
        .iter()
        .map(|(k, v)| format!("<{k}>{v}</{k}>"))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
         <u:{action} xmlns:u=\"{service}\">{args}</u:{action}></s:Body></s:Envelope>"
    )
}

/// A SOAP POST with `soap_action` as the header and `body` as is.
fn soap_post(bed: &Lanbed, path: &str, soap_action: &str, body: &[u8]) -> HttpResponse {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringcast-tests\r\n\
         Content-Type: text/xml; charset=\"utf-8\"\r\nSOAPAction: \"{soap_action}\"\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        bed.server_http(),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    client_raw(bed, request, false)
        .unwrap_or_else(|e| panic!("POST {path} ({soap_action}) from the client: {e}"))
}

/// A ContentDirectory Browse by SOAP from the client host.
fn browse(bed: &Lanbed, object: &str, flag: &str, start: &str, count: &str) -> HttpResponse {
    let body = soap_envelope(
        CONTENT_DIRECTORY,
        "Browse",
        &[
            ("ObjectID", object),
            ("BrowseFlag", flag),
            ("Filter", "*"),
            ("StartingIndex", start),
            ("RequestedCount", count),
            ("SortCriteria", ""),
        ],
    );
    soap_post(
        bed,
        CD_CONTROL,
        &format!("{CONTENT_DIRECTORY}#Browse"),
        body.as_bytes(),
    )
}

/// The text of the first `<tag>` element (no attributes) in `xml`.
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// The texts of every `<tag>` element in `xml`.
fn xml_texts<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(&rest[..j]);
        rest = &rest[j..];
    }
    out
}

/// Undoes the five predefined XML entities (a SOAP Result is escaped DIDL).
fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The UPnPError code in a SOAP fault body, if any.
fn upnp_error_code(body: &str) -> Option<u32> {
    xml_text(body, "errorCode").and_then(|c| c.trim().parse().ok())
}

/// `upnp-client [--strict] ARGS` in the client host; stdout, or a panic with
/// everything it printed.
fn upnp_client(bed: &Lanbed, args: &[&str], limit: Duration) -> String {
    upnp_client_on(bed, Host::Client, args, limit)
}

/// One SSDP answer as upnp-client prints it (header names in lower case).
type SearchAnswer = serde_json::Map<String, serde_json::Value>;

/// `upnp-client search` for `st` from `bind` in `host` (3 s): the answers,
/// and everything it printed.
fn upnp_search(bed: &Lanbed, host: Host, bind: Ipv4Addr, st: &str) -> (Vec<SearchAnswer>, String) {
    let bind = bind.to_string();
    let stdout = upnp_client_on(
        bed,
        host,
        &[
            "--timeout",
            "3",
            "search",
            "--bind",
            &bind,
            "--search_target",
            st,
        ],
        Duration::from_secs(10),
    );
    let answers = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.as_object().cloned())
        .map(|m| {
            m.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect()
        })
        .collect();
    (answers, stdout)
}

/// `upnp-client ARGS` in `host`.
fn upnp_client_on(bed: &Lanbed, host: Host, args: &[&str], limit: Duration) -> String {
    let tool = pyenv::upnp_client();
    let out = bed
        .run_in(host, limit, &tool.to_string_lossy(), args)
        .unwrap_or_else(|e| panic!("upnp-client {args:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "upnp-client {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `upnp-client --strict call-action LOCATION SERVICE/ACTION ARGS...`; the
/// `out_parameters` object it printed.
fn call_action(bed: &Lanbed, location: &str, action: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec![
        "--strict",
        "--timeout",
        "10",
        "call-action",
        location,
        action,
    ];
    all.extend_from_slice(args);
    let stdout = upnp_client(bed, &all, Duration::from_secs(20));
    let doc: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("upnp-client call-action printed no JSON ({e}):\n{stdout}"));
    doc["out_parameters"].clone()
}

/// An `out_parameters` number (upnp-client prints ui4 values as numbers).
fn out_u64(out: &serde_json::Value, key: &str) -> u64 {
    out[key]
        .as_u64()
        .or_else(|| out[key].as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("no number {key} in {out}"))
}

/// Parses a DIDL-Lite document with python's xml.etree (lan_tools.py didl).
fn parse_didl(didl: &str) -> serde_json::Value {
    pyenv::lan_tool("didl", didl.as_bytes())
        .unwrap_or_else(|e| panic!("the Browse Result is not valid DIDL-Lite: {e}\n{didl}"))
}

/// ffprobe of `input` run in `host`: (codec_type, codec_name) per stream.
fn ffprobe_in(
    bed: &Lanbed,
    host: Host,
    input: &str,
    extra: &[&str],
    limit: Duration,
) -> Result<Vec<(String, String)>, String> {
    let mut args = vec!["-hide_banner", "-v", "error"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "-show_entries",
        "stream=codec_type,codec_name",
        "-of",
        "json",
        "-i",
        input,
    ]);
    let out = bed.run_in(host, limit, "ffprobe", &args)?;
    if !out.status.success() {
        return Err(format!(
            "ffprobe {input} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("ffprobe printed no JSON ({e})"))?;
    Ok(doc["streams"]
        .as_array()
        .map(|streams| {
            streams
                .iter()
                .map(|s| {
                    (
                        s["codec_type"].as_str().unwrap_or("").to_string(),
                        s["codec_name"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

fn has_h264_and_aac(streams: &[(String, String)]) -> bool {
    let has = |t: &str, c: &str| streams.iter().any(|(ty, co)| ty == t && co == c);
    has("video", "h264") && has("audio", "aac")
}

/// `GET /metrics` (from the client), parsed by prometheus-client.
fn metrics(bed: &Lanbed) -> (HttpResponse, Vec<Sample>) {
    let r = client_request(bed, "GET", "/metrics");
    assert_eq!(r.status, 200, "/metrics: {} {}", r.status, r.body_text());
    let parsed = pyenv::lan_tool("metrics", &r.body).unwrap_or_else(|e| {
        panic!(
            "prometheus_client cannot parse /metrics: {e}\n{}",
            r.body_text()
        )
    });
    let mut samples = Vec::new();
    for family in parsed["families"].as_array().expect("families") {
        for s in family["samples"].as_array().expect("samples") {
            samples.push(Sample {
                family: family["name"].as_str().unwrap_or("").to_string(),
                family_type: family["type"].as_str().unwrap_or("").to_string(),
                name: s["name"].as_str().unwrap_or("").to_string(),
                labels: s["labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
                value: s["value"].as_f64().unwrap_or(f64::NAN),
            });
        }
    }
    (r, samples)
}

/// One sample as prometheus-client parsed it.
#[derive(Clone, Debug)]
struct Sample {
    family: String,
    family_type: String,
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The value of sample `name` with `channel="..."` (or no label when None).
fn metric(samples: &[Sample], name: &str, channel: Option<&str>) -> f64 {
    samples
        .iter()
        .find(|s| s.name == name && s.label("channel") == channel)
        .unwrap_or_else(|| panic!("no sample {name} channel={channel:?} in /metrics"))
        .value
}

fn show_datagrams(seen: &[Datagram]) -> String {
    seen.iter()
        .map(|d| {
            format!(
                "from {}: {} NT={:?} NTS={:?} USN={:?}",
                d.from,
                d.start_line(),
                d.header("NT"),
                d.header("NTS"),
                d.header("USN")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------

/// The test bed alone, no ringcast: multicast sent on the server arrives in
/// the client (SSDP to a listener joined on 239.255.255.250, and
/// gssdp-discover reports a NOTIFY), and an RTP multicast stream that
/// ffmpeg sends from the server decodes with ffprobe in the client. If this
/// fails, the other tests here prove nothing.
#[test]
fn testbed_carries_multicast_between_hosts() {
    require_root();
    let bed = Lanbed::new();
    let listener =
        SsdpListener::start(&bed, Host::Client, bed.client_ip(), Duration::from_secs(30));
    // gssdp-discover listens for 4 s; a NOTIFY alive for a made-up device
    // is sent after 1.5 s (so gssdp is listening by then).
    let discover = {
        let mut c = bed.command(Host::Client, Duration::from_secs(8), "gssdp-discover");
        c.args([
            "--interface=eth0",
            "--timeout=4",
            &format!("--target={MEDIA_SERVER}"),
        ]);
        std::thread::spawn(move || {
            ringcast_tests::media::run_with_timeout(&mut c, Duration::from_secs(12))
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let server = bed.server_ip();
    let notify = format!(
        "NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\n\
         LOCATION: http://{server}:8090/dlna/description.xml\r\nNT: {MEDIA_SERVER}\r\n\
         NTS: ssdp:alive\r\nSERVER: Linux/6 UPnP/1.0 testbed/1\r\n\
         USN: uuid:00000000-0000-4000-8000-000000000001::{MEDIA_SERVER}\r\n\r\n"
    );
    bed.run_on(Host::Server, move || {
        let s = UdpSocket::bind((server, 0)).expect("bind on the server");
        for _ in 0..3 {
            s.send_to(notify.as_bytes(), (lanbed::SSDP_GROUP, lanbed::SSDP_PORT))
                .expect("send NOTIFY");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let out = discover.join().unwrap().expect("gssdp-discover");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!(
        "gssdp-discover:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = parse_gssdp(&text);
    assert!(
        found.iter().any(
            |(usn, location)| usn.contains("00000000-0000-4000-8000-000000000001")
                && location == &format!("http://{server}:8090/dlna/description.xml")
        ),
        "gssdp-discover in the client did not report the NOTIFY sent on the server: {found:?}"
    );
    let seen = listener.finish();
    assert!(
        seen.iter()
            .any(|d| d.from.ip() == std::net::IpAddr::V4(server)),
        "the client's SSDP listener caught nothing from the server:\n{}",
        show_datagrams(&seen)
    );

    // RTP multicast across the switch, the way --output sends it.
    let media = make_ts(TsSpec::default());
    let mut ffmpeg = bed.command(Host::Server, Duration::from_secs(20), "ffmpeg");
    ffmpeg
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-i",
        ])
        .arg(&media)
        .args([
            "-c",
            "copy",
            "-f",
            "rtp_mpegts",
            "rtp://239.10.9.9:5004?ttl=2",
        ]);
    let sender = std::thread::spawn(move || {
        ringcast_tests::media::run_with_timeout(&mut ffmpeg, Duration::from_secs(14))
    });
    let streams = ffprobe_in(
        &bed,
        Host::Client,
        "rtp://239.10.9.9:5004",
        &["-analyzeduration", "3000000"],
        Duration::from_secs(10),
    );
    let _ = sender.join();
    let streams = streams.unwrap_or_else(|e| panic!("ffprobe of ffmpeg's RTP multicast: {e}"));
    assert!(has_h264_and_aac(&streams), "ffprobe saw {streams:?}");
}

/// (USN, Location) pairs from gssdp-discover's output:
/// `resource available` / `  USN:      ...` / `  Location: ...`.
fn parse_gssdp(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut usn: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("USN:") {
            usn = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("Location:") {
            if let Some(u) = usn.take() {
                out.push((u, v.trim().to_string()));
            }
        }
    }
    out
}

/// A real SSDP control point in the client finds ringcast's MediaServer:
/// gssdp-discover and `upnp-client search` both get an answer with LOCATION
/// on the server's LAN address and the USN of the UUID in `/status`; the
/// description there names the device and friendly name, and its service
/// documents are served.
#[test]
fn real_ssdp_client_finds_media_server() {
    let bed = Lanbed::new();
    let daemon = bed.start_daemon(&args_with(&["demo"], &["--friendly-name", FRIENDLY_NAME]));
    let uuid = dlna_uuid(&daemon);
    let location = bed.server_url(DESCRIPTION);

    let out = bed
        .run_in(
            Host::Client,
            Duration::from_secs(8),
            "gssdp-discover",
            &[
                "--interface=eth0",
                "--timeout=3",
                &format!("--target={MEDIA_SERVER}"),
            ],
        )
        .expect("gssdp-discover");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("gssdp-discover:\n{text}");
    let found = parse_gssdp(&text);
    assert!(
        found
            .iter()
            .any(|(usn, loc)| usn == &format!("uuid:{uuid}::{MEDIA_SERVER}") && loc == &location),
        "gssdp-discover did not find uuid:{uuid}::{MEDIA_SERVER} at {location}: {found:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (answers, stdout) = upnp_search(&bed, Host::Client, bed.client_ip(), MEDIA_SERVER);
    println!("upnp-client search:\n{stdout}");
    let ours: Vec<_> = answers
        .iter()
        .filter(|a| a["usn"].as_str().is_some_and(|u| u.contains(&uuid)))
        .collect();
    assert!(
        !ours.is_empty(),
        "upnp-client search found no answer with uuid {uuid}:\n{stdout}"
    );
    for a in &ours {
        assert_eq!(a["location"].as_str(), Some(location.as_str()), "{a:?}");
        assert_eq!(a["st"].as_str(), Some(MEDIA_SERVER), "{a:?}");
        assert_eq!(
            a["usn"].as_str(),
            Some(format!("uuid:{uuid}::{MEDIA_SERVER}").as_str()),
            "{a:?}"
        );
    }

    // One answer per matching ST, each search from a raw socket, within MX.
    let nts = expected_nts(&uuid);
    let mut searches: Vec<(String, Vec<(String, String)>)> =
        vec![("ssdp:all".to_string(), nts.clone())];
    searches.extend(nts.iter().map(|nt| (nt.0.clone(), vec![nt.clone()])));
    for (st, want) in searches {
        let got = search_once(&bed, &st, 1, Duration::from_millis(1600));
        let mut pairs: Vec<(String, String)> = got
            .iter()
            .map(|(_, d)| {
                let h = |n: &str| ssdp_header(d, n).unwrap_or("").to_string();
                (h("ST"), h("USN"))
            })
            .collect();
        pairs.sort();
        let mut want = want.clone();
        want.sort();
        assert_eq!(pairs, want, "answers to M-SEARCH ST: {st}");
        for (after, d) in &got {
            assert!(
                *after <= Duration::from_millis(1100),
                "ST {st}: an answer {after:?} after a search with MX 1"
            );
            assert!(d.starts_with("HTTP/1.1 200 OK\r\n"), "{d}");
            assert_eq!(ssdp_header(d, "LOCATION"), Some(location.as_str()), "{d}");
            assert!(
                ssdp_header(d, "CACHE-CONTROL").is_some_and(|c| c.contains("max-age=")),
                "{d}"
            );
            assert!(ssdp_header(d, "EXT").is_some(), "no EXT header: {d}");
            assert!(
                ssdp_header(d, "SERVER").is_some_and(|v| v.contains("UPnP/")),
                "{d}"
            );
        }
    }
    // A search for a type we do not have gets nothing.
    let none = search_once(
        &bed,
        "urn:schemas-upnp-org:device:MediaRenderer:1",
        1,
        Duration::from_millis(1500),
    );
    assert!(
        none.is_empty(),
        "answers to a MediaRenderer search: {none:?}"
    );

    // The description at LOCATION.
    let r = client_request(&bed, "GET", DESCRIPTION);
    let xml = r.body_text();
    assert_eq!(r.status, 200, "GET {DESCRIPTION}: {xml}");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().contains("xml")),
        "description Content-Type {:?}",
        r.header("content-type")
    );
    assert_eq!(xml_text(&xml, "deviceType"), Some(MEDIA_SERVER), "{xml}");
    assert_eq!(
        xml_text(&xml, "UDN"),
        Some(format!("uuid:{uuid}").as_str()),
        "{xml}"
    );
    assert_eq!(
        xml_text(&xml, "friendlyName").map(xml_unescape).as_deref(),
        Some(FRIENDLY_NAME),
        "{xml}"
    );
    let status = daemon.status_json();
    assert_eq!(
        status["node"]["friendly_name"].as_str(),
        Some(FRIENDLY_NAME),
        "/status node: {}",
        status["node"]
    );
    assert!(
        xml_text(&xml, "manufacturer").is_some() && xml_text(&xml, "modelName").is_some(),
        "{xml}"
    );
    assert!(
        xml.contains("X_DLNADOC") && xml.contains("DMS-1.50"),
        "no dlna:X_DLNADOC DMS-1.50: {xml}"
    );
    let types = xml_texts(&xml, "serviceType");
    assert!(
        types.contains(&CONTENT_DIRECTORY) && types.contains(&CONNECTION_MANAGER),
        "services {types:?}"
    );
    for scpd in xml_texts(&xml, "SCPDURL") {
        let r = client_request(&bed, "GET", scpd);
        assert_eq!(r.status, 200, "GET {scpd}: {}", r.body_text());
        assert!(
            r.body_text().contains("<actionList>"),
            "{scpd}: {}",
            r.body_text()
        );
    }
    // A strict control point reads the description (with the name's
    // markup characters) and the root container carries the same name.
    let out = call_action(
        &bed,
        &location,
        "ContentDirectory/Browse",
        &[
            "ObjectID=0",
            "BrowseFlag=BrowseMetadata",
            "Filter=*",
            "StartingIndex=0",
            "RequestedCount=0",
            "SortCriteria=",
        ],
    );
    let root = parse_didl(out["Result"].as_str().expect("Result"));
    assert_eq!(
        root["containers"][0]["title"].as_str(),
        Some(FRIENDLY_NAME),
        "{root}"
    );
    assert!(daemon.stop().success());
}

/// A friendly name with every character XML must escape.
const FRIENDLY_NAME: &str = "Tom & Jerry's \"den\" <ringcast>";

/// `upnp-client --strict call-action ... ContentDirectory/Browse` lists every
/// channel as a videoItem under "0" with a `res` that ffprobe decodes from
/// the client; BrowseMetadata on "0" describes the root container; paging
/// returns the asked-for slice with the full TotalMatches. The stream
/// response carries the DLNA headers with the MIME type of protocolInfo.
#[test]
fn real_browse_lists_every_channel_and_res_decodes() {
    let bed = Lanbed::new();
    let names = ["demo", "news", "sport"];
    let daemon = bed.start_daemon(&channel_args(&names));
    let location = bed.server_url(DESCRIPTION);

    let out = call_action(
        &bed,
        &location,
        "ContentDirectory/Browse",
        &[
            "ObjectID=0",
            "BrowseFlag=BrowseDirectChildren",
            "Filter=*",
            "StartingIndex=0",
            "RequestedCount=0",
            "SortCriteria=",
        ],
    );
    println!("Browse 0 children: {out}");
    assert_eq!(out_u64(&out, "NumberReturned"), names.len() as u64, "{out}");
    assert_eq!(out_u64(&out, "TotalMatches"), names.len() as u64, "{out}");
    let didl = parse_didl(out["Result"].as_str().expect("Result"));
    let items = didl["items"].as_array().expect("items");
    assert!(
        didl["containers"].as_array().is_some_and(|c| c.is_empty()),
        "{didl}"
    );
    let titles: Vec<&str> = items.iter().filter_map(|i| i["title"].as_str()).collect();
    assert_eq!(titles.len(), names.len(), "{didl}");
    for name in names {
        assert!(titles.contains(&name), "no item titled {name}: {didl}");
    }
    let mut ids = Vec::new();
    for item in items {
        let title = item["title"].as_str().unwrap();
        assert_eq!(
            item["class"].as_str(),
            Some("object.item.videoItem"),
            "{item}"
        );
        assert_eq!(item["parentID"].as_str(), Some("0"), "{item}");
        let res = item["res"].as_array().expect("res list");
        assert_eq!(res.len(), 1, "{item}");
        let url = res[0]["url"].as_str().unwrap();
        assert_eq!(
            url,
            bed.server_url(&format!("/channel/{title}.ts")),
            "{item}"
        );
        let info = res[0]["protocolInfo"].as_str().unwrap();
        let fields: Vec<&str> = info.split(':').collect();
        assert_eq!(fields.len(), 4, "protocolInfo {info:?}");
        assert_eq!(&fields[..3], &["http-get", "*", "video/mp2t"], "{info}");
        assert!(
            fields[3] == "*" || fields[3].contains("DLNA.ORG_OP=00"),
            "a live stream's protocolInfo must say DLNA.ORG_OP=00 (no seeking): {info}"
        );
        ids.push(item["id"].as_str().expect("item id").to_string());

        // Each res decodes from the client.
        let streams = ffprobe_in(
            &bed,
            Host::Client,
            url,
            &["-rw_timeout", "10000000", "-analyzeduration", "3000000"],
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("{title}: {e}"));
        assert!(
            has_h264_and_aac(&streams),
            "{title}: ffprobe saw {streams:?}"
        );

        // HEAD and GET carry the DLNA stream headers.
        let path = format!("/channel/{title}.ts");
        let head = client_request(&bed, "HEAD", &path);
        let mut get = ReaderOptions::new(&path, Duration::from_millis(500))
            .netns(Some(&bed.ns(Host::Client)));
        get.keep_bytes = 64 * 1024;
        let get = Reader::start(bed.server_http(), get).join();
        let get_head = get
            .head
            .clone()
            .unwrap_or_else(|| panic!("GET {path}: {:?}", get.end));
        for (method, h) in [("HEAD", &head), ("GET", &get_head)] {
            assert_eq!(h.status, 200, "{method} {path}");
            assert_eq!(
                h.header("content-type"),
                Some(fields[2]),
                "{method} {path}: {h:?}"
            );
            assert_eq!(
                h.header("transfermode.dlna.org"),
                Some("Streaming"),
                "{method} {path}: {h:?}"
            );
            assert!(
                h.header("contentfeatures.dlna.org")
                    .is_some_and(|c| c.contains("DLNA.ORG_OP=00")),
                "{method} {path}: contentFeatures.dlna.org {:?}",
                h.header("contentfeatures.dlna.org")
            );
            assert!(
                h.header("content-length").is_none(),
                "{method} {path}: {h:?}"
            );
        }
        assert!(
            head.body.is_empty(),
            "HEAD {path} sent {} body bytes",
            head.body.len()
        );
        assert!(get.total_bytes > 0, "GET {path} sent no body");
    }

    // BrowseMetadata on the root.
    let out = call_action(
        &bed,
        &location,
        "ContentDirectory/Browse",
        &[
            "ObjectID=0",
            "BrowseFlag=BrowseMetadata",
            "Filter=*",
            "StartingIndex=0",
            "RequestedCount=0",
            "SortCriteria=",
        ],
    );
    println!("Browse 0 metadata: {out}");
    assert_eq!(out_u64(&out, "NumberReturned"), 1, "{out}");
    assert_eq!(out_u64(&out, "TotalMatches"), 1, "{out}");
    let root = parse_didl(out["Result"].as_str().expect("Result"));
    let containers = root["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{root}");
    assert_eq!(containers[0]["id"].as_str(), Some("0"), "{root}");
    assert_eq!(containers[0]["parentID"].as_str(), Some("-1"), "{root}");
    assert!(
        containers[0]["childCount"]
            .as_str()
            .is_none_or(|c| c == names.len().to_string()),
        "root childCount: {root}"
    );
    assert!(
        root["items"].as_array().is_some_and(|i| i.is_empty()),
        "{root}"
    );

    // BrowseMetadata on one item gives that item.
    let object = format!("ObjectID={}", ids[1]);
    let out = call_action(
        &bed,
        &location,
        "ContentDirectory/Browse",
        &[
            &object,
            "BrowseFlag=BrowseMetadata",
            "Filter=*",
            "StartingIndex=0",
            "RequestedCount=0",
            "SortCriteria=",
        ],
    );
    let one = parse_didl(out["Result"].as_str().expect("Result"));
    assert_eq!(
        one["items"][0]["id"].as_str(),
        Some(ids[1].as_str()),
        "{one}"
    );

    // Paging: the second child alone, with the full total.
    let out = call_action(
        &bed,
        &location,
        "ContentDirectory/Browse",
        &[
            "ObjectID=0",
            "BrowseFlag=BrowseDirectChildren",
            "Filter=*",
            "StartingIndex=1",
            "RequestedCount=1",
            "SortCriteria=",
        ],
    );
    println!("Browse 0 children [1..2]: {out}");
    assert_eq!(out_u64(&out, "NumberReturned"), 1, "{out}");
    assert_eq!(out_u64(&out, "TotalMatches"), names.len() as u64, "{out}");
    let page = parse_didl(out["Result"].as_str().expect("Result"));
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(
        page["items"][0]["id"].as_str(),
        Some(ids[1].as_str()),
        "{page}"
    );

    // The other actions a TV calls answer too.
    for action in [
        "ContentDirectory/GetSearchCapabilities",
        "ContentDirectory/GetSortCapabilities",
        "ContentDirectory/GetSystemUpdateID",
        "ConnectionManager/GetProtocolInfo",
        "ConnectionManager/GetCurrentConnectionIDs",
    ] {
        let out = call_action(&bed, &location, action, &[]);
        println!("{action}: {out}");
        if action.ends_with("GetProtocolInfo") {
            assert!(
                out["Source"]
                    .as_str()
                    .is_some_and(|s| s.contains("http-get:*:video/mp2t:")),
                "{action}: {out}"
            );
        }
    }
    let out = call_action(
        &bed,
        &location,
        "ConnectionManager/GetCurrentConnectionInfo",
        &["ConnectionID=0"],
    );
    println!("GetCurrentConnectionInfo 0: {out}");
    // By hand: an empty ObjectID is the root, and the answer's arguments
    // come in the SCPD's order (Result, NumberReturned, TotalMatches,
    // UpdateID), which some TVs rely on.
    let r = browse(&bed, "", "BrowseDirectChildren", "0", "0");
    let body = r.body_text();
    assert_eq!(r.status, 200, "Browse of an empty ObjectID: {body}");
    assert_eq!(
        xml_text(&body, "NumberReturned"),
        Some(names.len().to_string().as_str()),
        "{body}"
    );
    let at = |tag: &str| {
        body.find(&format!("<{tag}>"))
            .unwrap_or_else(|| panic!("no {tag}: {body}"))
    };
    assert!(
        at("Result") < at("NumberReturned")
            && at("NumberReturned") < at("TotalMatches")
            && at("TotalMatches") < at("UpdateID"),
        "Browse arguments out of order: {body}"
    );
    // Samsung's X_GetFeatureList is not in the SCPD a generic control point
    // reads, so it goes by hand.
    let body = soap_envelope(CONTENT_DIRECTORY, "X_GetFeatureList", &[]);
    let r = soap_post(
        &bed,
        CD_CONTROL,
        &format!("{CONTENT_DIRECTORY}#X_GetFeatureList"),
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "X_GetFeatureList: {}", r.body_text());
    assert!(
        r.body_text().contains("FeatureList"),
        "X_GetFeatureList: {}",
        r.body_text()
    );
    assert!(daemon.stop().success());
}

/// VLC (as a non-root user, headless) opens `/playlist.m3u` from the client
/// and plays the channel; the relay logs VLC as a reader (its User-Agent)
/// and the channel's bytes_out grows. The playlist itself is `#EXTM3U` and
/// one `#EXTINF` line plus an absolute URL per channel.
#[test]
fn vlc_opens_playlist_and_relay_logs_reader() {
    let bed = Lanbed::new();
    let daemon = bed.start_daemon(&channel_args(&["demo"]));
    let playlist = client_request(&bed, "GET", "/playlist.m3u");
    assert_eq!(playlist.status, 200);
    let text = playlist.body_text();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        lines,
        vec![
            "#EXTM3U",
            "#EXTINF:-1 tvg-name=\"demo\" group-title=\"ringcast\",demo",
            &bed.server_url("/channel/demo.ts"),
        ],
        "playlist:\n{text}"
    );
    let before = json_u64(&daemon.channel_status("demo"), "/bytes_out");

    static NEXT: AtomicU64 = AtomicU64::new(0);
    let home = std::env::temp_dir().join(format!(
        "ringcast-vlc-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&home).expect("VLC home");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let url = bed.server_url("/playlist.m3u");
    let home_env = format!("HOME={}", home.display());
    let started = Instant::now();
    let out = bed
        .run_in(
            Host::Client,
            Duration::from_secs(25),
            "runuser",
            &[
                "-u",
                "nobody",
                "--",
                "env",
                &home_env,
                "cvlc",
                "--intf",
                "dummy",
                "--vout",
                "dummy",
                "--aout",
                "dummy",
                "--no-video-title-show",
                "--run-time",
                "6",
                "--play-and-exit",
                &url,
            ],
        )
        .expect("run cvlc");
    let ran = started.elapsed();
    let _ = std::fs::remove_dir_all(&home);
    let vlc_err = String::from_utf8_lossy(&out.stderr).into_owned();
    println!(
        "cvlc ran {ran:?}, {}; stderr tail:\n{}",
        out.status,
        tail(&vlc_err, 20)
    );

    let started_line = daemon
        .wait_log(
            "channel demo: reader 192.168.60.20:",
            Duration::from_secs(3),
        )
        .unwrap_or_else(|| {
            panic!(
                "no `channel demo: reader 192.168.60.20:...` line; VLC said:\n{}",
                tail(&vlc_err, 30)
            )
        });
    println!("{started_line}");
    let start_line = daemon
        .logs()
        .into_iter()
        .find(|l| l.contains("channel demo: reader 192.168.60.20:") && l.contains(" started ("))
        .unwrap_or_else(|| panic!("no `started (...)` line for VLC"));
    assert!(
        start_line.contains("started (VLC/"),
        "the reader line does not name VLC's User-Agent: {start_line}"
    );
    let left_line = wait_left(&daemon, Duration::from_secs(5));
    println!("{left_line:?}");
    assert!(
        left_line.is_some(),
        "no `left after N s (B bytes)` line after VLC exited:\n{}",
        daemon.logs().join("\n")
    );
    let after = json_u64(&daemon.channel_status("demo"), "/bytes_out");
    // 6 s at 1 Mbit/s is 750 kB; VLC read at least half of that.
    assert!(
        after - before > 300_000,
        "bytes_out grew by only {} while VLC played",
        after - before
    );
    assert!(
        out.status.success(),
        "cvlc exited {} (run {ran:?}):\n{}",
        out.status,
        tail(&vlc_err, 30)
    );
    assert!(daemon.stop().success());
}

fn wait_left(daemon: &Daemon, timeout: Duration) -> Option<String> {
    wait_for(timeout, || {
        daemon.logs().into_iter().find(|l| {
            l.contains("channel demo: reader 192.168.60.20:") && l.contains(" left after ")
        })
    })
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `--output NAME=rtp://...` and `udp://...`: on the client host (across the
/// switch) the RTP group decodes with ffprobe as H.264 + AAC, and the
/// datagrams are RTP version 2, payload type 33, consecutive sequence
/// numbers, 7 whole TS packets each; the UDP group carries 7 TS packets per
/// datagram without a header. The channel's output bytes are counted.
#[test]
fn multicast_out_decodes_in_another_namespace() {
    let bed = Lanbed::new();
    let daemon = bed.start_daemon(&args_with(
        &["demo", "news"],
        &[
            "--output",
            "demo=rtp://239.10.1.1:5004?ttl=2&iface=eth0",
            "--output",
            "news=udp://239.10.1.2:5006?ttl=2&iface=eth0",
        ],
    ));
    let streams = ffprobe_in(
        &bed,
        Host::Client,
        "rtp://239.10.1.1:5004",
        &["-analyzeduration", "3000000"],
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| panic!("ffprobe rtp://239.10.1.1:5004 in the client: {e}"));
    println!("ffprobe rtp: {streams:?}");
    assert!(has_h264_and_aac(&streams), "ffprobe saw {streams:?}");

    let client = bed.client_ip();
    // Three seconds of each group, with arrival times.
    let capture = |group: Ipv4Addr, port: u16| {
        bed.run_on(Host::Client, move || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind group port");
            s.join_multicast_v4(&group, &client).expect("join");
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut got: Vec<(Instant, Vec<u8>)> = Vec::new();
            let mut buf = [0u8; 2048];
            while got.len() < 5_000 && Instant::now() < deadline {
                if let Ok((n, _)) = s.recv_from(&mut buf) {
                    got.push((Instant::now(), buf[..n].to_vec()));
                }
            }
            got
        })
    };
    // Paced by arrival: about the stream's rate (1 Mbit/s of TS) and no
    // burst of many datagrams at once.
    let pacing = |who: &str, got: &[(Instant, Vec<u8>)], header: usize| {
        let (first, last) = (got[0].0, got[got.len() - 1].0);
        let span = (last - first).as_secs_f64();
        let bits: usize = got[1..].iter().map(|(_, d)| (d.len() - header) * 8).sum();
        let rate = bits as f64 / span;
        let per_100ms = got
            .iter()
            .map(|(t, _)| {
                got.iter()
                    .filter(|(u, _)| *u >= *t && *u < *t + Duration::from_millis(100))
                    .count()
            })
            .max()
            .unwrap_or(0);
        println!(
            "{who}: {} datagrams over {span:.2} s, {:.0} kbit/s of TS, at most {per_100ms} in 100 ms",
            got.len(),
            rate / 1000.0
        );
        let nominal = TsSpec::default().bitrate_bps();
        assert!(
            rate > nominal * 0.7 && rate < nominal * 1.3,
            "{who}: {:.0} kbit/s, the stream is {:.0} kbit/s",
            rate / 1000.0,
            nominal / 1000.0
        );
        // 1 Mbit/s is about 9.5 datagrams per 100 ms.
        assert!(
            per_100ms <= 40,
            "{who}: a burst of {per_100ms} datagrams in 100 ms"
        );
    };
    let rtp = capture(Ipv4Addr::new(239, 10, 1, 1), 5004);
    assert!(rtp.len() >= 100, "only {} RTP datagrams in 3 s", rtp.len());
    pacing("rtp", &rtp, 12);
    let rtp: Vec<Vec<u8>> = rtp.into_iter().map(|(_, d)| d).collect();
    let mut last_seq: Option<u16> = None;
    for (i, d) in rtp.iter().enumerate() {
        assert_eq!(
            d.len(),
            12 + 7 * 188,
            "RTP datagram #{i} is {} bytes",
            d.len()
        );
        assert_eq!(d[0] >> 6, 2, "RTP version in #{i}");
        assert_eq!(d[1] & 0x7f, 33, "payload type in #{i}");
        let seq = u16::from_be_bytes([d[2], d[3]]);
        if let Some(prev) = last_seq {
            assert_eq!(seq, prev.wrapping_add(1), "RTP sequence jumps at #{i}");
        }
        last_seq = Some(seq);
        assert!(
            (0..7).all(|k| d[12 + k * 188] == 0x47),
            "RTP datagram #{i} is not 7 aligned TS packets"
        );
    }
    // One source (SSRC) throughout, and a 90 kHz clock that moves with the
    // stream (RFC 3551 §4.5 for MP2T: the timestamp of the datagram's
    // sending, in 90 kHz units).
    let ssrc = |d: &Vec<u8>| u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
    assert!(
        rtp.iter().all(|d| ssrc(d) == ssrc(&rtp[0])),
        "the SSRC changes within 3 s"
    );
    let stamp = |d: &Vec<u8>| u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    let ticks = stamp(&rtp[rtp.len() - 1]).wrapping_sub(stamp(&rtp[0]));
    println!(
        "rtp: SSRC {:08x}, timestamp advanced {ticks} ticks",
        ssrc(&rtp[0])
    );
    assert!(
        (150_000..400_000).contains(&ticks),
        "the RTP timestamp moved {ticks} ticks of 90 kHz over about 3 s"
    );
    let udp = capture(Ipv4Addr::new(239, 10, 1, 2), 5006);
    assert!(udp.len() >= 100, "only {} UDP datagrams in 3 s", udp.len());
    pacing("udp", &udp, 0);
    let udp: Vec<Vec<u8>> = udp.into_iter().map(|(_, d)| d).collect();
    for (i, d) in udp.iter().enumerate() {
        assert_eq!(d.len(), 7 * 188, "UDP datagram #{i} is {} bytes", d.len());
        assert!((0..7).all(|k| d[k * 188] == 0x47), "UDP datagram #{i}");
    }
    let (_, samples) = metrics(&bed);
    for channel in ["demo", "news"] {
        let out = metric(
            &samples,
            "ringcast_channel_output_bytes_total",
            Some(channel),
        );
        assert!(out > 100.0 * 1316.0, "{channel}: output bytes {out}");
    }
    assert!(daemon.stop().success());
}

/// A multicast listener on the client sees NOTIFY ssdp:alive for all five
/// notification types at start, and ssdp:byebye for each of them after
/// SIGTERM, before the daemon exits (0, within ~2.5 s), while a player
/// streams and an RTP output runs (a busy box says goodbye too).
#[test]
fn byebye_on_sigterm() {
    let bed = Lanbed::new();
    let listener =
        SsdpListener::start(&bed, Host::Client, bed.client_ip(), Duration::from_secs(40));
    let daemon = bed.start_daemon(&args_with(
        &["demo"],
        &["--output", "demo=rtp://239.10.1.1:5004?ttl=2&iface=eth0"],
    ));
    let mut options = ReaderOptions::new("/channel/demo.ts", Duration::from_secs(20))
        .netns(Some(&bed.ns(Host::Client)));
    options.keep_bytes = 0;
    let reader = Reader::start(bed.server_http(), options);
    let uuid = dlna_uuid(&daemon);
    let nts = expected_nts(&uuid);
    let location = bed.server_url(DESCRIPTION);
    let has_all = |seen: &[Datagram], kind: &str| {
        nts.iter().all(|(nt, usn)| {
            seen.iter().any(|d| {
                d.start_line().starts_with("NOTIFY ")
                    && d.header("NTS") == Some(kind)
                    && d.header("NT") == Some(nt.as_str())
                    && d.header("USN") == Some(usn.as_str())
            })
        })
    };
    let alive = listener.wait(Duration::from_secs(5), |seen| has_all(seen, "ssdp:alive"));
    assert!(
        alive,
        "no NOTIFY ssdp:alive for all five NTs within 5 s of start:\n{}",
        show_datagrams(&listener.seen())
    );
    for d in listener.seen() {
        if d.header("NTS") == Some("ssdp:alive") {
            assert_eq!(d.header("LOCATION"), Some(location.as_str()), "{}", d.text);
            assert!(
                d.header("CACHE-CONTROL")
                    .is_some_and(|c| c.contains("max-age")),
                "{}",
                d.text
            );
            assert!(d.header("SERVER").is_some(), "{}", d.text);
            assert_eq!(
                d.from.ip(),
                std::net::IpAddr::V4(bed.server_ip()),
                "{}",
                d.text
            );
        }
    }
    assert!(
        wait_for(Duration::from_secs(5), || {
            (json_u64(&daemon.channel_status("demo"), "/readers") == 1).then_some(())
        })
        .is_some(),
        "the player never started"
    );
    let stop_at = Instant::now();
    let status = daemon.stop();
    let exited_at = Instant::now();
    let took = exited_at - stop_at;
    let player = reader.join();
    println!(
        "exit {status} {took:?} after SIGTERM; the player got {} bytes, then {:?}",
        player.total_bytes, player.end
    );
    // Let the last datagrams cross the switch.
    std::thread::sleep(Duration::from_millis(300));
    let seen = listener.finish();
    assert!(
        has_all(&seen, "ssdp:byebye"),
        "no ssdp:byebye for all five NTs after SIGTERM:\n{}",
        show_datagrams(&seen)
    );
    let byebyes: Vec<&Datagram> = seen
        .iter()
        .filter(|d| d.header("NTS") == Some("ssdp:byebye"))
        .collect();
    assert!(
        byebyes.iter().all(|d| d.at >= stop_at),
        "byebye before SIGTERM"
    );
    assert!(
        byebyes
            .iter()
            .all(|d| d.at <= exited_at + Duration::from_millis(100)),
        "byebye after the daemon exited"
    );
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(3),
        "exit took {took:?} after SIGTERM"
    );
}

/// Readers on loopback and on the LAN read for a few seconds; afterwards
/// `/metrics` parses with prometheus-client, has every documented name,
/// and its bytes_out for the channel equals (within 1%) the bytes the
/// readers received; uptime is positive and `/status` says the same.
#[test]
fn metrics_parse_and_match_readers() {
    let bed = Lanbed::new();
    let daemon = bed.start_daemon(&channel_args(&["demo", "idle"]));
    // Long enough that the bytes in flight when a reader closes (sent and
    // counted, never read: about one flush of the stream) stay well under 1%.
    let read_for = Duration::from_secs(10);
    let client_ns = bed.ns(Host::Client);
    let server_ns = bed.ns(Host::Server);
    let mut lan = ReaderOptions::new("/channel/demo.ts", read_for).netns(Some(&client_ns));
    lan.keep_bytes = 0;
    let mut local = ReaderOptions::new("/channel/demo.ts", read_for).netns(Some(&server_ns));
    local.keep_bytes = 0;
    let readers = vec![
        Reader::start(bed.server_http(), lan.clone()),
        Reader::start(bed.server_http(), lan),
        Reader::start(SocketAddr::from(([127, 0, 0, 1], lanbed::HTTP_PORT)), local),
    ];
    let results: Vec<ReaderResult> = readers.into_iter().map(Reader::join).collect();
    let mut received = 0u64;
    for (i, r) in results.iter().enumerate() {
        r.assert_stream_head(&format!("reader #{i}"));
        assert_eq!(r.end, End::Duration, "reader #{i}");
        assert!(
            r.total_bytes > 200_000,
            "reader #{i}: {} bytes",
            r.total_bytes
        );
        received += r.total_bytes;
    }
    // The daemon notices the closed connections.
    let gone = wait_for(Duration::from_secs(5), || {
        (json_u64(&daemon.channel_status("demo"), "/readers") == 0).then_some(())
    });
    assert!(
        gone.is_some(),
        "readers still counted: {}",
        daemon.channel_status("demo")
    );
    // The daemon's own count per reader, from its `left after` lines.
    let left = wait_for(Duration::from_secs(3), || {
        let lines: Vec<String> = daemon
            .logs()
            .into_iter()
            .filter(|l| l.contains("channel demo: reader ") && l.contains(" left after "))
            .collect();
        (lines.len() == 3).then_some(lines)
    })
    .unwrap_or_else(|| {
        panic!(
            "not three `left after` lines:\n{}",
            daemon.logs().join("\n")
        )
    });
    let logged: u64 = left
        .iter()
        .map(|l| {
            l.rsplit_once('(')
                .and_then(|(_, b)| b.strip_suffix(" bytes)"))
                .and_then(|b| b.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no byte count in {l:?}"))
        })
        .sum();

    let before = daemon.status_json();
    let (r, samples) = metrics(&bed);
    let ctype = r.header("content-type").unwrap_or("");
    assert!(
        ctype.starts_with("text/plain") && ctype.contains("version=0.0.4"),
        "/metrics Content-Type {ctype:?}"
    );
    let status = daemon.status_json();
    let names: std::collections::BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    println!("metric samples: {names:?}");
    for name in [
        "ringcast_uptime_seconds",
        "ringcast_channel_bytes_in_total",
        "ringcast_channel_bytes_out_total",
        "ringcast_channel_readers",
        "ringcast_channel_peers",
        "ringcast_channel_skips_total",
        "ringcast_channel_drops_total",
        "ringcast_channel_cc_errors_total",
        "ringcast_channel_output_bytes_total",
        "ringcast_portmap_state",
        "ringcast_portmap_reachable",
        "ringcast_ssdp_searches_total",
        "ringcast_ssdp_answers_total",
        "ringcast_ssdp_answers_dropped_total",
        "ringcast_http_requests_total",
        "ringcast_allocations_total",
    ] {
        assert!(
            names.contains(name),
            "no {name} in /metrics:\n{}",
            r.body_text()
        );
    }
    for s in &samples {
        if s.name.starts_with("ringcast_channel_") {
            let channel = s.label("channel").unwrap_or("");
            assert!(
                channel == "demo" || channel == "idle",
                "{} has channel label {channel:?}",
                s.name
            );
        }
        if s.name.ends_with("_total") {
            assert_eq!(
                s.family_type, "counter",
                "{} is a {}",
                s.name, s.family_type
            );
        }
        assert!(s.value.is_finite() && s.value >= 0.0, "{s:?}");
        assert!(!s.family.is_empty());
    }
    for channel in ["demo", "idle"] {
        for name in [
            "ringcast_channel_bytes_out_total",
            "ringcast_channel_readers",
        ] {
            metric(&samples, name, Some(channel));
        }
    }
    // One-hot portmap state.
    let states: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "ringcast_portmap_state")
        .collect();
    assert!(
        states.len() >= 2,
        "portmap_state is not over all states: {states:?}"
    );
    assert!(
        states.iter().all(|s| s.value == 0.0 || s.value == 1.0),
        "{states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| s.value == 1.0).count(),
        1,
        "portmap_state is not one-hot: {states:?}"
    );
    let on = states.iter().find(|s| s.value == 1.0).unwrap();
    assert_eq!(
        on.label("state"),
        status["portmap"]["state"].as_str(),
        "portmap state: /metrics {on:?}, /status {}",
        status["portmap"]
    );

    let bytes_out = metric(&samples, "ringcast_channel_bytes_out_total", Some("demo"));
    let diff = (bytes_out - received as f64).abs() / received as f64;
    println!(
        "readers received {received} bytes; ringcast_channel_bytes_out_total{{channel=\"demo\"}} {bytes_out} ({:+.3}%)",
        (bytes_out - received as f64) / received as f64 * 100.0
    );
    assert!(
        diff <= 0.01,
        "bytes_out {bytes_out} vs {received} received by the readers: {:.2}% apart",
        diff * 100.0
    );
    println!(
        "the daemon's `left after` lines add up to {logged} bytes:\n{}",
        left.join("\n")
    );
    assert_eq!(
        logged as f64, bytes_out,
        "`left after` byte counts vs bytes_out"
    );
    assert!(
        logged >= received,
        "the daemon logged fewer bytes than the readers received"
    );
    assert_eq!(
        metric(&samples, "ringcast_channel_readers", Some("demo")),
        0.0
    );
    assert_eq!(
        metric(&samples, "ringcast_channel_bytes_out_total", Some("idle")),
        0.0
    );
    assert!(metric(&samples, "ringcast_channel_bytes_in_total", Some("demo")) > 0.0);
    assert!(metric(&samples, "ringcast_uptime_seconds", None) > 0.0);
    assert!(metric(&samples, "ringcast_http_requests_total", None) >= 4.0);
    assert!(metric(&samples, "ringcast_allocations_total", None) > 0.0);

    // /status (taken after /metrics) says the same.
    let demo = daemon.channel_status("demo");
    assert_eq!(
        json_u64(&demo, "/bytes_out") as f64,
        bytes_out,
        "/status demo: {demo}"
    );
    assert!(
        json_u64(&demo, "/bytes_in") as f64
            >= metric(&samples, "ringcast_channel_bytes_in_total", Some("demo")),
        "/status demo: {demo}"
    );
    // /metrics was read between these two /status documents.
    let allocations = metric(&samples, "ringcast_allocations_total", None);
    assert!(
        json_u64(&before, "/alloc/allocations") as f64 <= allocations
            && allocations <= json_u64(&status, "/alloc/allocations") as f64,
        "ringcast_allocations_total {allocations} is not between /status alloc.allocations {} and {}",
        before["alloc"],
        status["alloc"]
    );
    let uptime = metric(&samples, "ringcast_uptime_seconds", None);
    assert!(
        json_u64(&before, "/uptime_s") as f64 <= uptime + 1.0
            && uptime <= json_u64(&status, "/uptime_s") as f64 + 1.0,
        "ringcast_uptime_seconds {uptime} vs /status uptime_s {} .. {}",
        before["uptime_s"],
        status["uptime_s"]
    );
    assert!(daemon.stop().success());
}

/// One M-SEARCH for `st` from a fresh socket on the client; every answer
/// that arrives within `wait`, with how long after the search it came.
fn search_once(bed: &Lanbed, st: &str, mx_s: u32, wait: Duration) -> Vec<(Duration, String)> {
    let client = bed.client_ip();
    let request = m_search(st, mx_s);
    bed.run_on(Host::Client, move || {
        let socket = UdpSocket::bind((client, 0)).expect("bind a search socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let sent = Instant::now();
        socket
            .send_to(request.as_bytes(), (lanbed::SSDP_GROUP, lanbed::SSDP_PORT))
            .expect("send M-SEARCH");
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while sent.elapsed() < wait && got.len() < 64 {
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                got.push((
                    sent.elapsed(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
        got
    })
}

/// What the flood thread saw.
#[derive(Debug, Default)]
struct Flood {
    sent: u64,
    send_errors: u64,
    answers: u64,
    answer_sts: std::collections::BTreeMap<String, u64>,
    took: Duration,
}

/// Sends `count` M-SEARCH (ssdp:all, MX 1) to the SSDP group from the
/// client, round-robin from `sources` (addresses of the client), at about
/// `rate` per second, and counts the unicast answers until `settle` after
/// the last one.
fn msearch_flood(
    bed: &Lanbed,
    sources: &[Ipv4Addr],
    count: u64,
    rate: u64,
    settle: Duration,
) -> Flood {
    let sources = sources.to_vec();
    let sockets: Vec<UdpSocket> = bed.run_on(Host::Client, move || {
        sources
            .iter()
            .map(|ip| UdpSocket::bind((*ip, 0)).expect("bind a flood socket"))
            .collect()
    });
    let receivers: Vec<UdpSocket> = sockets
        .iter()
        .map(|s| {
            let r = s.try_clone().expect("clone socket");
            r.set_nonblocking(true).expect("nonblocking");
            r
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let counter = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut answers = 0u64;
            let mut sts = std::collections::BTreeMap::new();
            let mut buf = [0u8; 2048];
            let hard_stop = Instant::now() + Duration::from_secs(30);
            while !done.load(Ordering::Relaxed) && Instant::now() < hard_stop {
                for receiver in &receivers {
                    while let Ok((n, _)) = receiver.recv_from(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if text.starts_with("HTTP/1.1 200") {
                            answers += 1;
                            let st = ssdp_header(&text, "ST").unwrap_or("-").to_string();
                            *sts.entry(st).or_insert(0) += 1;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (answers, sts)
        })
    };
    let request = m_search("ssdp:all", 1);
    let target = SocketAddr::from((lanbed::SSDP_GROUP, lanbed::SSDP_PORT));
    let start = Instant::now();
    let mut flood = Flood::default();
    for i in 0..count {
        let socket = &sockets[i as usize % sockets.len()];
        match socket.send_to(request.as_bytes(), target) {
            Ok(_) => flood.sent += 1,
            Err(_) => flood.send_errors += 1,
        }
        if i % 50 == 49 {
            let due = start + Duration::from_micros((i + 1) * 1_000_000 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    flood.took = start.elapsed();
    std::thread::sleep(settle);
    done.store(true, Ordering::Relaxed);
    let (answers, sts) = counter.join().expect("answer counter");
    flood.answers = answers;
    flood.answer_sts = sts;
    flood
}

/// A reader streams while a LAN host floods 10,000 M-SEARCH in ~2 s, sends
/// malformed SOAP (garbage, truncated XML, 9 KiB, a wrong SOAPAction, a
/// non-numeric StartingIndex, an unknown object) and asks for a billion
/// objects: answers stay bounded, every bad request gets a fault, Browse
/// returns only what exists, the reader never stalls, and neither RSS nor
/// the allocation count grows.
#[test]
fn hostile_lan_flood_soap_and_huge_browse() {
    let bed = Lanbed::new();
    let names = ["demo", "news"];
    let daemon = bed.start_daemon(&channel_args(&names));
    let mut options = ReaderOptions::new("/channel/demo.ts", Duration::from_secs(30))
        .netns(Some(&bed.ns(Host::Client)));
    options.keep_bytes = 0;
    let reader = Reader::start(bed.server_http(), options);
    // Warm up every path the flood takes once: an M-SEARCH and its answers,
    // a Browse, a fault, /status, /metrics.
    let warm = msearch_flood(
        &bed,
        &[bed.client_ip()],
        3,
        100,
        Duration::from_millis(1500),
    );
    assert!(
        warm.answers > 0,
        "no answer to 3 M-SEARCH ssdp:all: {warm:?}"
    );
    let r = browse(&bed, "0", "BrowseDirectChildren", "0", "0");
    assert_eq!(r.status, 200, "Browse: {}", r.body_text());
    let r = browse(&bed, "no-such-object", "BrowseMetadata", "0", "0");
    assert_eq!(
        r.status,
        500,
        "Browse of an unknown object: {}",
        r.body_text()
    );
    let _ = metrics(&bed);
    let _ = daemon.status_json();
    // A TV and 24 flooding addresses on the client host.
    let tv_ip = Ipv4Addr::new(192, 168, 60, 30);
    bed.ip(
        Host::Client,
        &["addr", "add", "192.168.60.30/24", "dev", "eth0"],
    );
    let flooders: Vec<Ipv4Addr> = (100..124).map(|h| Ipv4Addr::new(192, 168, 60, h)).collect();
    for ip in &flooders {
        bed.ip(
            Host::Client,
            &["addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
    }
    let s0 = daemon.status_json();
    let rss0 = daemon.rss_kib();
    let alloc0 = json_u64(&s0, "/alloc/allocations");
    let flood_start = Instant::now();

    // One host floods from one address while a TV (another address of the
    // client host) searches: the TV must still find the server.
    let tv = {
        let tool = pyenv::upnp_client();
        let mut c = bed.command(
            Host::Client,
            Duration::from_secs(12),
            &tool.to_string_lossy(),
        );
        c.args(["--timeout", "3", "search", "--bind"])
            .arg(tv_ip.to_string())
            .args(["--search_target", MEDIA_SERVER]);
        std::thread::spawn(move || {
            // Into the flood, which lasts about 2 s.
            std::thread::sleep(Duration::from_millis(700));
            ringcast_tests::media::run_with_timeout(&mut c, Duration::from_secs(15))
        })
    };
    let flood = msearch_flood(
        &bed,
        &[bed.client_ip()],
        10_000,
        5_000,
        Duration::from_secs(2),
    );
    let tv = tv
        .join()
        .expect("TV search thread")
        .expect("upnp-client search");
    let tv_found = String::from_utf8_lossy(&tv.stdout).contains(&format!(
        "{}:{}",
        bed.server_ip(),
        lanbed::HTTP_PORT
    ));
    let s1 = daemon.status_json();
    let alloc_flood = json_u64(&s1, "/alloc/allocations") - alloc0;
    let (_, samples) = metrics(&bed);
    let searches = metric(&samples, "ringcast_ssdp_searches_total", None);
    let answered = metric(&samples, "ringcast_ssdp_answers_total", None);
    let dropped = metric(&samples, "ringcast_ssdp_answers_dropped_total", None);
    println!(
        "M-SEARCH flood from one address: sent {} ({} send errors) in {:?}; {} answers received {:?}; \
         daemon counted {searches} searches, {answered} answers, {dropped} answers dropped (since start); \
         {alloc_flood} allocations; a TV searching meanwhile found the server: {tv_found}",
        flood.sent, flood.send_errors, flood.took, flood.answers, flood.answer_sts
    );
    assert!(flood.sent >= 9_000, "the flood itself failed: {flood:?}");
    // Without a limit this would be 5 answers per search, 50,000. The
    // documented limit (firmware/src/lan/ssdp.rs) for one searcher's address
    // is a token bucket of SEARCHER_ANSWERS_PER_S, which is also its burst;
    // answers stop with the last search plus MX (1 s).
    let per_s = u64::from(SEARCHER_ANSWERS_PER_S);
    let limit = per_s + (per_s as f64 * (flood.took.as_secs_f64() + 1.0)).ceil() as u64;
    println!(
        "documented limit for this flood: {limit} answers ({per_s}/s per searcher, burst {per_s})"
    );
    assert!(
        flood.answers <= limit,
        "{} answers to 10,000 M-SEARCH in {:?} from one address: over the documented {limit}",
        flood.answers,
        flood.took
    );
    assert!(
        answered >= flood.answers as f64 - 5.0,
        "the daemon counted fewer answers than arrived"
    );
    assert!(dropped > 0.0, "no answer counted as dropped during a flood");
    assert!(
        tv_found,
        "a TV searching during a one-address flood did not find the server:\n{}{}",
        String::from_utf8_lossy(&tv.stdout),
        String::from_utf8_lossy(&tv.stderr)
    );

    // The same from 24 addresses (more than the searchers the daemon
    // tracks, so per-searcher buckets are forgotten): the global bucket,
    // ANSWERS_PER_S with a burst of ANSWERS_BURST, bounds the answers.
    let flood = msearch_flood(&bed, &flooders, 10_000, 5_000, Duration::from_secs(2));
    let limit = u64::from(ANSWERS_BURST)
        + (f64::from(ANSWERS_PER_S) * (flood.took.as_secs_f64() + 1.0)).ceil() as u64;
    println!(
        "M-SEARCH flood from {} addresses: sent {} in {:?}; {} answers received {:?}; documented limit {limit} \
         ({ANSWERS_PER_S}/s, burst {ANSWERS_BURST})",
        flooders.len(),
        flood.sent,
        flood.took,
        flood.answers,
        flood.answer_sts
    );
    assert!(flood.sent >= 9_000, "the flood itself failed: {flood:?}");
    assert!(
        flood.answers <= limit,
        "{} answers to 10,000 M-SEARCH from {} addresses in {:?}: over the documented {limit}",
        flood.answers,
        flooders.len(),
        flood.took
    );
    let alloc_flood = json_u64(&daemon.status_json(), "/alloc/allocations") - alloc0;

    // Malformed SOAP, each refused with a fault, the daemon up after each.
    let valid = soap_envelope(
        CONTENT_DIRECTORY,
        "Browse",
        &[
            ("ObjectID", "0"),
            ("BrowseFlag", "BrowseDirectChildren"),
            ("Filter", "*"),
            ("StartingIndex", "0"),
            ("RequestedCount", "0"),
            ("SortCriteria", ""),
        ],
    );
    let browse_action = format!("{CONTENT_DIRECTORY}#Browse");
    let mut huge = valid.clone();
    huge.insert_str(
        huge.find("<s:Body>").unwrap(),
        &format!("<!--{}-->", "x".repeat(9 * 1024)),
    );
    let non_numeric = valid.replace(
        "<StartingIndex>0</StartingIndex>",
        "<StartingIndex>abc</StartingIndex>",
    );
    let unknown_object = valid.replace("<ObjectID>0</ObjectID>", "<ObjectID>9999</ObjectID>");
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "garbage",
            browse_action.clone(),
            b"\x00\xff\xfegarbage<<<>>>&&&".to_vec(),
        ),
        (
            "truncated XML",
            browse_action.clone(),
            valid.as_bytes()[..valid.len() / 2].to_vec(),
        ),
        ("9 KiB body", browse_action.clone(), huge.into_bytes()),
        (
            "wrong SOAPAction",
            format!("{CONTENT_DIRECTORY}#DestroyEverything"),
            soap_envelope(CONTENT_DIRECTORY, "DestroyEverything", &[]).into_bytes(),
        ),
        (
            "SOAPAction of another service",
            format!("{CONNECTION_MANAGER}#Browse"),
            valid.clone().into_bytes(),
        ),
        (
            "non-numeric StartingIndex",
            browse_action.clone(),
            non_numeric.into_bytes(),
        ),
        (
            "unknown ObjectID",
            browse_action.clone(),
            unknown_object.into_bytes(),
        ),
        ("empty body", browse_action.clone(), Vec::new()),
    ];
    let mut faults = Vec::new();
    for (what, action, body) in &cases {
        let r = soap_post(&bed, CD_CONTROL, action, body);
        let code = upnp_error_code(&r.body_text());
        println!("{what}: {} {} UPnPError {code:?}", r.status, r.reason);
        assert!(
            (400..=599).contains(&r.status),
            "{what}: answered {} {}: {}",
            r.status,
            r.reason,
            r.body_text()
        );
        if r.status == 500 {
            assert!(
                code.is_some(),
                "{what}: a 500 without a UPnPError code: {}",
                r.body_text()
            );
        }
        faults.push((*what, r.status, code));
        assert_eq!(daemon.get("/status").status, 200, "after {what}");
    }
    let code_of = |what: &str| faults.iter().find(|f| f.0 == what).and_then(|f| f.2);
    assert_eq!(code_of("wrong SOAPAction"), Some(401), "{faults:?}");
    assert_eq!(
        code_of("non-numeric StartingIndex"),
        Some(402),
        "{faults:?}"
    );
    assert_eq!(code_of("unknown ObjectID"), Some(701), "{faults:?}");

    // A billion objects asked for: only what exists.
    let r = browse(&bed, "0", "BrowseDirectChildren", "0", "1000000000");
    let body = r.body_text();
    assert_eq!(r.status, 200, "huge Browse: {body}");
    let returned: u64 = xml_text(&body, "NumberReturned")
        .and_then(|n| n.parse().ok())
        .expect("NumberReturned");
    let total: u64 = xml_text(&body, "TotalMatches")
        .and_then(|n| n.parse().ok())
        .expect("TotalMatches");
    assert_eq!(
        (returned, total),
        (names.len() as u64, names.len() as u64),
        "{body}"
    );
    let didl = parse_didl(&xml_unescape(xml_text(&body, "Result").expect("Result")));
    assert_eq!(
        didl["items"].as_array().map(Vec::len),
        Some(names.len()),
        "{didl}"
    );
    let r = browse(
        &bed,
        "0",
        "BrowseDirectChildren",
        "4294967295",
        "4294967295",
    );
    assert!(
        r.status == 200 && xml_text(&r.body_text(), "NumberReturned") == Some("0")
            || r.status == 500,
        "Browse from the last possible index: {} {}",
        r.status,
        r.body_text()
    );

    // A bounded round of the same abuse again, to show a leak if any.
    for round in 0..25 {
        for (what, action, body) in &cases {
            let r = soap_post(&bed, CD_CONTROL, action, body);
            assert!(
                (400..=599).contains(&r.status),
                "round {round}, {what}: {}",
                r.status
            );
        }
        let r = browse(&bed, "0", "BrowseDirectChildren", "0", "1000000000");
        assert_eq!(r.status, 200);
    }
    let flood_end = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let s2 = daemon.status_json();
    let rss1 = daemon.rss_kib();
    let alloc_all = json_u64(&s2, "/alloc/allocations") - alloc0;
    println!(
        "RSS {rss0} KiB -> {rss1} KiB; allocations: {alloc_flood} during the flood, {alloc_all} through the SOAP abuse too"
    );

    reader.stop();
    let r = reader.join();
    assert!(
        matches!(r.end, End::Stopped | End::Duration),
        "the reader was cut off: {:?}",
        r.end
    );
    // No gap longer than 2 s between reads while the LAN was hostile.
    let mut last = flood_start;
    let mut worst = Duration::ZERO;
    for (at, _) in r.samples.iter().filter(|(at, _)| *at >= flood_start) {
        worst = worst.max(*at - last);
        last = *at;
    }
    worst = worst.max(flood_end.min(r.ended_at).saturating_duration_since(last));
    let during = r.bytes_between(flood_start, flood_end);
    let seconds = (flood_end - flood_start).as_secs_f64();
    println!("reader: {during} bytes over the {seconds:.1} s of abuse, longest pause {worst:?}");
    assert!(
        worst < Duration::from_secs(2),
        "the reader stalled for {worst:?}"
    );
    assert!(
        during as f64 >= 1_000_000.0 / 8.0 * seconds * 0.7,
        "the reader got {during} bytes in {seconds:.1} s (1 Mbit/s stream)"
    );
    assert!(
        rss1 <= rss0 + 256,
        "RSS grew from {rss0} KiB to {rss1} KiB across the hostile LAN"
    );
    assert_eq!(
        alloc_flood, 0,
        "{alloc_flood} allocations during the M-SEARCH flood"
    );
    assert_eq!(
        alloc_all, 0,
        "{alloc_all} allocations during the flood and SOAP abuse"
    );
    assert!(daemon.stop().success());
}

/// A server on two LANs: each LAN hears NOTIFY alive with LOCATION on the
/// server's address on that LAN, a search from each LAN is answered with
/// that LAN's address, and a Browse from the second LAN lists res URLs on
/// the address it reached. With `--lan-if eth0` the second LAN hears and
/// gets nothing while the first is still served.
#[test]
fn location_follows_the_lan_and_lan_if_limits_it() {
    let bed = Lanbed::with_second_lan();
    let life = Duration::from_secs(30);
    let client_listener = SsdpListener::start(&bed, Host::Client, bed.client_ip(), life);
    let tv_listener = SsdpListener::start(&bed, Host::Tv, bed.tv_ip(), life);
    let daemon = bed.start_daemon(&channel_args(&["demo"]));
    let uuid = dlna_uuid(&daemon);
    let lan1 = format!(
        "http://{}:{}{DESCRIPTION}",
        bed.server_ip(),
        lanbed::HTTP_PORT
    );
    let lan2 = format!(
        "http://{}:{}{DESCRIPTION}",
        bed.server_ip2(),
        lanbed::HTTP_PORT
    );
    let alive_with = |seen: &[Datagram], uuid: &str, location: &str| {
        seen.iter().any(|d| {
            d.header("NTS") == Some("ssdp:alive")
                && d.header("USN").is_some_and(|u| u.contains(uuid))
                && d.header("LOCATION") == Some(location)
        })
    };
    for (who, listener, want, other) in [
        ("LAN 1", &client_listener, &lan1, &lan2),
        ("LAN 2", &tv_listener, &lan2, &lan1),
    ] {
        assert!(
            listener.wait(Duration::from_secs(5), |seen| alive_with(seen, &uuid, want)),
            "{who}: no NOTIFY alive with LOCATION {want}:\n{}",
            show_datagrams(&listener.seen())
        );
        assert!(
            !alive_with(&listener.seen(), &uuid, other),
            "{who} heard the other LAN's LOCATION {other}"
        );
    }
    for (who, host, bind, want) in [
        ("LAN 1", Host::Client, bed.client_ip(), &lan1),
        ("LAN 2", Host::Tv, bed.tv_ip(), &lan2),
    ] {
        let (answers, stdout) = upnp_search(&bed, host, bind, "upnp:rootdevice");
        let ours: Vec<_> = answers
            .iter()
            .filter(|a| a["usn"].as_str().is_some_and(|u| u.contains(&uuid)))
            .collect();
        assert!(!ours.is_empty(), "{who}: no answer:\n{stdout}");
        for a in ours {
            assert_eq!(a["location"].as_str(), Some(want.as_str()), "{who}: {a:?}");
        }
    }
    // Browse from the TV: the res URL is on the address the TV reached.
    let body = soap_envelope(
        CONTENT_DIRECTORY,
        "Browse",
        &[
            ("ObjectID", "0"),
            ("BrowseFlag", "BrowseDirectChildren"),
            ("Filter", "*"),
            ("StartingIndex", "0"),
            ("RequestedCount", "0"),
            ("SortCriteria", ""),
        ],
    );
    let server2 = SocketAddr::from((bed.server_ip2(), lanbed::HTTP_PORT));
    let mut request = format!(
        "POST {CD_CONTROL} HTTP/1.1\r\nHost: {server2}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n\
         SOAPAction: \"{CONTENT_DIRECTORY}#Browse\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body.as_bytes());
    let r = raw_from(&bed, Host::Tv, server2, request, false).expect("Browse from the TV");
    assert_eq!(r.status, 200, "Browse from the TV: {}", r.body_text());
    let didl = parse_didl(&xml_unescape(
        xml_text(&r.body_text(), "Result").expect("Result"),
    ));
    assert_eq!(
        didl["items"][0]["res"][0]["url"].as_str(),
        Some(format!("http://{server2}/channel/demo.ts").as_str()),
        "{didl}"
    );
    assert!(daemon.stop().success());
    std::thread::sleep(Duration::from_millis(300));
    // byebye on both LANs, for all five notification types.
    for (who, listener) in [("LAN 1", client_listener), ("LAN 2", tv_listener)] {
        let seen = listener.finish();
        for (nt, usn) in expected_nts(&uuid) {
            assert!(
                seen.iter().any(|d| d.header("NTS") == Some("ssdp:byebye")
                    && d.header("NT") == Some(nt.as_str())
                    && d.header("USN") == Some(usn.as_str())),
                "{who}: no byebye for {nt}:\n{}",
                show_datagrams(&seen)
            );
        }
    }

    // Only eth0.
    let client_listener = SsdpListener::start(&bed, Host::Client, bed.client_ip(), life);
    let tv_listener = SsdpListener::start(&bed, Host::Tv, bed.tv_ip(), life);
    let daemon = bed.start_daemon(&args_with(&["demo"], &["--lan-if", "eth0"]));
    let uuid = dlna_uuid(&daemon);
    assert!(
        client_listener.wait(Duration::from_secs(5), |seen| alive_with(
            seen, &uuid, &lan1
        )),
        "--lan-if eth0: no NOTIFY alive on LAN 1:\n{}",
        show_datagrams(&client_listener.seen())
    );
    let (answers, stdout) = upnp_search(&bed, Host::Tv, bed.tv_ip(), "ssdp:all");
    assert!(
        !answers
            .iter()
            .any(|a| a["usn"].as_str().is_some_and(|u| u.contains(&uuid))),
        "--lan-if eth0: a search on LAN 2 was answered:\n{stdout}"
    );
    let (answers, stdout) = upnp_search(&bed, Host::Client, bed.client_ip(), "ssdp:all");
    assert!(
        answers
            .iter()
            .any(|a| a["usn"].as_str().is_some_and(|u| u.contains(&uuid))),
        "--lan-if eth0: a search on LAN 1 got no answer:\n{stdout}"
    );
    assert!(daemon.stop().success());
    // Let a late byebye cross the switch before looking.
    std::thread::sleep(Duration::from_millis(300));
    let heard: Vec<Datagram> = tv_listener
        .finish()
        .into_iter()
        .filter(|d| d.header("USN").is_some_and(|u| u.contains(&uuid)))
        .collect();
    assert!(
        heard.is_empty(),
        "--lan-if eth0: LAN 2 heard the server:\n{}",
        show_datagrams(&heard)
    );
    drop(client_listener.finish());
}

/// The documented SOAP limit is 8 KiB of body: a Browse whose body is just
/// under, or exactly, 8 KiB (an envelope padded with whitespace) is
/// answered, one byte more is refused with 413, and the daemon stays up
/// through all of them (the request head comes on top of the body).
#[test]
fn soap_body_up_to_8_kib_is_answered() {
    let bed = Lanbed::new();
    let daemon = bed.start_daemon(&channel_args(&["demo"]));
    let envelope = soap_envelope(
        CONTENT_DIRECTORY,
        "Browse",
        &[
            ("ObjectID", "0"),
            ("BrowseFlag", "BrowseDirectChildren"),
            ("Filter", "*"),
            ("StartingIndex", "0"),
            ("RequestedCount", "0"),
            ("SortCriteria", ""),
        ],
    );
    let action = format!("{CONTENT_DIRECTORY}#Browse");
    let limit = ringcast::lan::dlna::BODY_BYTES_MAX;
    for (size, want) in [(limit - 200, 200), (limit, 200), (limit + 1, 413)] {
        let mut body = envelope.clone().into_bytes();
        body.resize(size, b' ');
        let r = client_raw(
            &bed,
            {
                let mut request = format!(
                    "POST {CD_CONTROL} HTTP/1.1\r\nHost: {}\r\n\
                     Content-Type: text/xml; charset=\"utf-8\"\r\nSOAPAction: \"{action}\"\r\n\
                     Content-Length: {size}\r\nConnection: close\r\n\r\n",
                    bed.server_http()
                )
                .into_bytes();
                request.extend_from_slice(&body);
                request
            },
            false,
        );
        let alive = daemon.try_request("GET", "/status", &[]).map(|r| r.status);
        println!(
            "{size}-byte body: {:?}; /status afterwards: {alive:?}",
            r.as_ref().map(|r| (r.status, r.reason.clone()))
        );
        assert_eq!(
            alive,
            Ok(200),
            "the daemon is gone after a SOAP request with a {size}-byte body (limit {limit}):\n{}",
            tail(&daemon.logs().join("\n"), 10)
        );
        let r = r.unwrap_or_else(|e| panic!("{size}-byte body: {e}"));
        assert_eq!(r.status, want, "{size}-byte body: {}", r.body_text());
    }
    assert!(daemon.stop().success());
}

/// The most channels a box holds (CHANNELS_MAX), each with a name of the
/// longest allowed length: a TV paging through Browse sees every one,
/// `/metrics` parses and labels every one, and the playlist lists every one.
#[test]
fn every_channel_of_a_full_box_is_browsable_and_measured() {
    let bed = Lanbed::new();
    let count = ringcast::limits::CHANNELS_MAX;
    let names: Vec<String> = (0..count)
        .map(|i| {
            format!(
                "{i:02}-{}",
                "x".repeat(ringcast::limits::CHANNEL_NAME_BYTES_MAX - 3)
            )
        })
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    // Small rings: 32 channels of the default 16 MiB would be 512 MiB.
    let daemon = bed.start_daemon(&args_with(&refs, &["--ring-size", "512K"]));
    let location = bed.server_url(DESCRIPTION);

    // Page as a TV does: ask for everything from where the last page ended.
    let mut titles: Vec<String> = Vec::new();
    let mut pages = 0;
    while titles.len() < count && pages < count {
        let start = format!("StartingIndex={}", titles.len());
        let out = call_action(
            &bed,
            &location,
            "ContentDirectory/Browse",
            &[
                "ObjectID=0",
                "BrowseFlag=BrowseDirectChildren",
                "Filter=*",
                &start,
                "RequestedCount=0",
                "SortCriteria=",
            ],
        );
        pages += 1;
        assert_eq!(out_u64(&out, "TotalMatches"), count as u64, "{out}");
        let returned = out_u64(&out, "NumberReturned");
        assert!(returned > 0, "an empty page at {}: {out}", titles.len());
        let didl = parse_didl(out["Result"].as_str().expect("Result"));
        let items = didl["items"].as_array().expect("items");
        assert_eq!(items.len() as u64, returned, "{didl}");
        titles.extend(
            items
                .iter()
                .map(|i| i["title"].as_str().unwrap_or("").to_string()),
        );
    }
    println!("{count} channels browsed in {pages} page(s)");
    let mut sorted = titles.clone();
    sorted.sort();
    assert_eq!(sorted, names, "Browse did not list every channel once");

    let (r, samples) = metrics(&bed);
    println!("/metrics with {count} channels: {} bytes", r.body.len());
    for family in [
        "ringcast_channel_bytes_out_total",
        "ringcast_channel_readers",
        "ringcast_channel_output_bytes_total",
    ] {
        let labelled: std::collections::BTreeSet<&str> = samples
            .iter()
            .filter(|s| s.name == family)
            .filter_map(|s| s.label("channel"))
            .collect();
        assert_eq!(
            labelled.len(),
            count,
            "{family} covers {} channels",
            labelled.len()
        );
    }
    let playlist = client_request(&bed, "GET", "/playlist.m3u").body_text();
    let entries = playlist
        .lines()
        .filter(|l| l.starts_with("#EXTINF:"))
        .count();
    assert_eq!(entries, count, "playlist:\n{playlist}");
    let status = daemon.status_json();
    assert_eq!(status["channels"].as_array().map(Vec::len), Some(count));
    assert!(daemon.stop().success());
}

/// A LAN host that opens idle connections (a slow-loris) holds at most half
/// of the daemon's request readers: a TV on another LAN still gets its
/// description at once, and the idle host's extra connections get a 503.
/// Without the per-host share, 16 idle connections stall every new request
/// for the 5 s header timeout.
#[test]
fn one_host_cannot_hold_every_request_reader() {
    require_root();
    let bed = Lanbed::with_second_lan();
    let daemon = bed.start_daemon(&channel_args(&["demo"]));
    let server = bed.server_http();
    const IDLE: usize = 40;
    let held = bed.run_on(Host::Client, move || {
        let mut held = Vec::new();
        for _ in 0..IDLE {
            if let Ok(stream) =
                std::net::TcpStream::connect_timeout(&server, Duration::from_secs(2))
            {
                held.push(stream);
            }
        }
        held
    });
    assert_eq!(held.len(), IDLE, "the idle host could not even connect");
    std::thread::sleep(Duration::from_millis(300));
    let tv_server = SocketAddr::from((bed.server_ip2(), server.port()));
    let started = Instant::now();
    let answer = bed.run_on(Host::Tv, move || {
        ringcast_tests::http::http_get(tv_server, "/dlna/description.xml")
    });
    let took = started.elapsed();
    let answer = answer.expect("the TV's request");
    assert_eq!(answer.status, 200);
    assert!(
        took < Duration::from_secs(1),
        "the TV waited {took:?} behind {IDLE} idle connections of another host"
    );
    // The idle host's connections past its share were answered 503.
    let mut refused = 0;
    for mut stream in held {
        use std::io::Read as _;
        let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
        let mut head = [0u8; 64];
        if let Ok(n) = stream.read(&mut head) {
            if head[..n].starts_with(b"HTTP/1.1 503") {
                refused += 1;
            }
        }
    }
    println!("TV answered in {took:?}; {refused} of {IDLE} idle connections got a 503");
    assert!(
        refused >= IDLE - ringcast::node::CONTROL_WORKERS,
        "only {refused} of {IDLE} idle connections were refused"
    );
    drop(daemon);
}
