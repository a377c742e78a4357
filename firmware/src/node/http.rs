//! The HTTP control path: the acceptor and the control workers. A control
//! worker reads one request head (bounded in bytes and time), routes it with
//! `lan::route`, answers documents itself and hands stream requests to a
//! stream worker. Every connection is `Connection: close`.

use core::fmt::Write as _;
use core::net::SocketAddr;
use std::rc::Rc;

use ringcast_hal::{Clock, Error as _, Net, TcpListener as _, TcpStream as _};

use super::{agent_from, first_of, Agent, Either, Node, StreamJob};
use crate::lan::{self, dlna, ChannelView, DaemonView, DlnaDocument, Route, StartAt, UrlBase};
use crate::limits::{HTTP_HEADERS_MAX, HTTP_HEADER_BYTES_MAX, RESPONSE_BYTES_MAX};
use crate::wire::http::{self, HttpError, Method, Status};
use crate::wire::udpxy::OnDemand;
use crate::wire::SliceWriter;

/// The answer to a host that holds its share of the control workers.
const HOST_BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n\
Content-Length: 0\r\nConnection: close\r\n\r\n";

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_S: u32 = 5;

/// Accepts connections and hands them to idle control workers. When every
/// control worker is busy it stops accepting, so new connections wait in the
/// kernel's listen backlog (bounded) until a worker is free; a busy worker is
/// free again within the header timeout at worst.
pub async fn accept_loop<N: Net + 'static, C: Clock + 'static>(node: Rc<Node<N, C>>) {
    let mut error_logged = false;
    loop {
        node.control.wait_idle().await;
        if node.listener.readable().await.is_err() {
            continue;
        }
        while node.control.idle_count() > 0 {
            match node.listener.accept() {
                Ok((stream, peer)) => {
                    error_logged = false;
                    node.totals.http_requests.increment();
                    if !peer.ip().is_loopback()
                        && node.control_busy_for(peer.ip()) >= super::CONTROL_WORKERS_PER_HOST
                    {
                        // This host already has its share of the workers:
                        // a short 503 (it fits any fresh socket buffer),
                        // then close, without taking a worker.
                        let mut stream = stream;
                        let _ = stream.write(HOST_BUSY);
                        node.totals.http_rejected.increment();
                        continue;
                    }
                    let given = node.control.try_give(stream);
                    let Ok(worker) = given else {
                        unreachable!("an idle control worker was counted");
                    };
                    // Counted from the hand-over, before the worker runs.
                    node.control_hosts.borrow_mut()[worker] = Some(peer.ip());
                }
                Err(error) if error.is_would_block() => break,
                Err(error) => {
                    if !error_logged {
                        log::warn!("accept failed: {error}; retrying");
                        error_logged = true;
                    }
                    let resume_ms = node.clock.now_ms() + 100;
                    node.clock.sleep_until(resume_ms).await;
                    break;
                }
            }
        }
    }
}

/// Serves requests handed over by the acceptor, one at a time.
pub async fn control_worker<N: Net + 'static, C: Clock + 'static>(
    node: Rc<Node<N, C>>,
    worker: usize,
) {
    // A request head, and after it a SOAP body (DLNA control) at most.
    let mut request = vec![0u8; HTTP_HEADER_BYTES_MAX + dlna::BODY_BYTES_MAX].into_boxed_slice();
    let mut response = vec![0u8; RESPONSE_BYTES_MAX].into_boxed_slice();
    loop {
        let stream = node.control.take(worker).await;
        serve_connection(&node, stream, &mut request, &mut response).await;
        node.control_hosts.borrow_mut()[worker] = None;
    }
}

/// How reading a request head ended.
enum HeadRead {
    Complete(usize),
    TooLarge,
    Malformed,
    Gone,
}

async fn read_head<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    stream: &mut N::Stream,
    buffer: &mut [u8],
) -> HeadRead {
    let deadline_ms = node.clock.now_ms() + node.settings.header_timeout_ms;
    let mut length = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; HTTP_HEADERS_MAX];
        match http::parse_request(&buffer[..length], &mut headers) {
            Ok(Some(_)) => return HeadRead::Complete(length),
            Ok(None) if length == buffer.len() => return HeadRead::TooLarge,
            Ok(None) => {}
            Err(HttpError::HeadTooLarge) => return HeadRead::TooLarge,
            Err(_) => return HeadRead::Malformed,
        }
        match stream.read(&mut buffer[length..]) {
            Ok(0) => return HeadRead::Gone,
            Ok(count) => length += count,
            Err(error) if error.is_would_block() => {
                let ready = first_of(stream.readable(), node.clock.sleep_until(deadline_ms)).await;
                if let Either::Right(()) = ready {
                    return HeadRead::Gone;
                }
            }
            Err(_) => return HeadRead::Gone,
        }
    }
}

/// Reads the rest of a request body: `have` bytes of `buffer` are read so
/// far, the head is `head_length` of them, and the body is `body_length`
/// bytes (already checked against the buffer). Bounded by the header
/// timeout. Returns the body's range in `buffer`.
async fn read_body<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    stream: &mut N::Stream,
    buffer: &mut [u8],
    mut have: usize,
    head_length: usize,
    body_length: usize,
) -> Option<core::ops::Range<usize>> {
    let end = head_length + body_length;
    assert!(end <= buffer.len(), "body length checked by the caller");
    let deadline_ms = node.clock.now_ms() + node.settings.header_timeout_ms;
    while have < end {
        match stream.read(&mut buffer[have..end]) {
            Ok(0) => return None,
            Ok(count) => have += count,
            Err(error) if error.is_would_block() => {
                let ready = first_of(stream.readable(), node.clock.sleep_until(deadline_ms)).await;
                if let Either::Right(()) = ready {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    Some(head_length..end)
}

/// Writes all of `bytes`, giving up at the header timeout.
pub(super) async fn write_all<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    stream: &mut N::Stream,
    bytes: &[u8],
) -> bool {
    let deadline_ms = node.clock.now_ms() + node.settings.header_timeout_ms;
    write_all_until(node, stream, bytes, deadline_ms).await
}

/// Writes all of `bytes`, giving up at `deadline_ms`.
pub(super) async fn write_all_until<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    stream: &mut N::Stream,
    mut bytes: &[u8],
    deadline_ms: u64,
) -> bool {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(count) => bytes = &bytes[count..],
            Err(error) if error.is_would_block() => {
                let ready = first_of(stream.writable(), node.clock.sleep_until(deadline_ms)).await;
                if let Either::Right(()) = ready {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// What a request asks for, copied out of the request buffer.
enum Wanted {
    Channel {
        index: usize,
        head_only: bool,
        start: StartAt,
        agent: Agent,
    },
    OnDemand {
        target: OnDemand,
        head_only: bool,
        agent: Agent,
    },
    Document {
        route: DocumentRoute,
        head_only: bool,
    },
    /// SOAP control: the body follows the head.
    Control {
        service: dlna::Service,
        head_length: usize,
        body_length: usize,
        soap_action: SoapAction,
    },
    Error(Status),
}

/// Bytes of a SOAPACTION header kept.
const SOAP_ACTION_BYTES_MAX: usize = 160;

/// A request's SOAPACTION header, copied out of the request buffer.
type SoapAction = heapless::Vec<u8, SOAP_ACTION_BYTES_MAX>;

#[derive(Clone, Copy)]
enum DocumentRoute {
    Status,
    Index,
    Playlist,
    /// One family of `/metrics` (see `lan::metrics::FAMILIES`).
    Metrics(usize),
    Dlna(DlnaDocument),
}

fn decide<N: Net + 'static, C: Clock + 'static>(node: &Node<N, C>, request: &[u8]) -> Wanted {
    let mut headers = [httparse::EMPTY_HEADER; HTTP_HEADERS_MAX];
    let Ok(Some((head, head_length))) = http::parse_request(request, &mut headers) else {
        return Wanted::Error(Status::BadRequest);
    };
    let route = lan::route(head.path);
    if let (Method::Post, Route::DlnaControl(service)) = (head.method, route) {
        if !node.settings.dlna {
            return Wanted::Error(Status::NotFound);
        }
        return control_request(&head, head_length, service);
    }
    let head_only = match head.method {
        Method::Get => false,
        Method::Head => true,
        Method::Post | Method::Other => return Wanted::Error(Status::MethodNotAllowed),
    };
    let agent = agent_from(head.header("user-agent"));
    match route {
        Route::Channel(name) => {
            let Some(index) = node.channel_by_name(name) else {
                return Wanted::Error(Status::NotFound);
            };
            let Ok(start) = lan::parse_stream_query(head.query) else {
                return Wanted::Error(Status::BadRequest);
            };
            if let StartAt::Position(position) = start {
                if !node.channels[index].ring.borrow().holds(position) {
                    return Wanted::Error(Status::RangeNotSatisfiable);
                }
            }
            Wanted::Channel {
                index,
                head_only,
                start,
                agent,
            }
        }
        Route::OnDemand(target) if node.settings.on_demand_channels > 0 => Wanted::OnDemand {
            target,
            head_only,
            agent,
        },
        Route::OnDemand(_) | Route::NotFound => Wanted::Error(Status::NotFound),
        Route::BadOnDemand(_) => Wanted::Error(Status::BadRequest),
        Route::Status => Wanted::Document {
            route: DocumentRoute::Status,
            head_only,
        },
        Route::Index => Wanted::Document {
            route: DocumentRoute::Index,
            head_only,
        },
        Route::Playlist => Wanted::Document {
            route: DocumentRoute::Playlist,
            head_only,
        },
        Route::Metrics => Wanted::Document {
            route: DocumentRoute::Metrics(0),
            head_only,
        },
        Route::DlnaDocument(_) | Route::DlnaControl(_) if !node.settings.dlna => {
            Wanted::Error(Status::NotFound)
        }
        Route::DlnaDocument(document) => Wanted::Document {
            route: DocumentRoute::Dlna(document),
            head_only,
        },
        Route::DlnaControl(_) => Wanted::Error(Status::MethodNotAllowed),
    }
}

/// Checks a SOAP control request's head: a Content-Length within the
/// body limit (and no chunked body) is needed.
fn control_request(
    head: &http::RequestHead<'_, '_>,
    head_length: usize,
    service: dlna::Service,
) -> Wanted {
    if head.header("transfer-encoding").is_some() {
        return Wanted::Error(Status::LengthRequired);
    }
    let Some(length) = head.header("content-length") else {
        return Wanted::Error(Status::LengthRequired);
    };
    let length = core::str::from_utf8(length)
        .ok()
        .and_then(|l| l.trim().parse::<usize>().ok());
    let Some(body_length) = length else {
        return Wanted::Error(Status::BadRequest);
    };
    if body_length > dlna::BODY_BYTES_MAX {
        return Wanted::Error(Status::PayloadTooLarge);
    }
    let mut soap_action = SoapAction::new();
    if let Some(value) = head.header("soapaction") {
        if soap_action.extend_from_slice(value).is_err() {
            return Wanted::Error(Status::BadRequest);
        }
    }
    Wanted::Control {
        service,
        head_length,
        body_length,
        soap_action,
    }
}

async fn serve_connection<N: Net + 'static, C: Clock + 'static>(
    node: &Rc<Node<N, C>>,
    mut stream: N::Stream,
    request: &mut [u8],
    response: &mut [u8],
) {
    let length = match read_head(node, &mut stream, &mut request[..HTTP_HEADER_BYTES_MAX]).await {
        HeadRead::Complete(length) => length,
        HeadRead::TooLarge => {
            node.totals.http_bad_request.increment();
            send_status(node, &mut stream, response, Status::HeaderFieldsTooLarge).await;
            return drain(node, &mut stream, request).await;
        }
        HeadRead::Malformed => {
            node.totals.http_bad_request.increment();
            send_status(node, &mut stream, response, Status::BadRequest).await;
            return drain(node, &mut stream, request).await;
        }
        HeadRead::Gone => return node.totals.connections_dropped.increment(),
    };
    match decide(node, &request[..length]) {
        Wanted::Channel {
            head_only: true, ..
        } => send_stream_head(node, &mut stream, response).await,
        Wanted::Channel {
            index,
            head_only: false,
            start,
            agent,
        } => hand_to_stream_worker(node, stream, response, index, start, agent).await,
        // A HEAD (Kodi sends one first) answers without joining the group.
        Wanted::OnDemand {
            head_only: true, ..
        } => send_stream_head(node, &mut stream, response).await,
        Wanted::OnDemand {
            target,
            head_only: false,
            agent,
        } => match node.claim_on_demand(target) {
            Some(index) => {
                hand_to_stream_worker(node, stream, response, index, StartAt::Live, agent).await
            }
            None => busy(node, &mut stream, response).await,
        },
        Wanted::Document {
            route: DocumentRoute::Metrics(_),
            head_only,
        } => send_metrics(node, &mut stream, response, head_only).await,
        Wanted::Document { route, head_only } => {
            send_document(node, &mut stream, response, route, head_only).await
        }
        Wanted::Control {
            service,
            head_length,
            body_length,
            soap_action,
        } => {
            let Some(body) =
                read_body(node, &mut stream, request, length, head_length, body_length).await
            else {
                return node.totals.connections_dropped.increment();
            };
            let action = (!soap_action.is_empty()).then_some(&soap_action[..]);
            send_control(node, &mut stream, response, service, action, &request[body]).await;
        }
        Wanted::Error(status) => {
            if status == Status::NotFound {
                node.totals.http_not_found.increment();
            } else {
                node.totals.http_bad_request.increment();
            }
            send_status(node, &mut stream, response, status).await;
        }
    }
}

async fn hand_to_stream_worker<N: Net + 'static, C: Clock + 'static>(
    node: &Rc<Node<N, C>>,
    stream: N::Stream,
    response: &mut [u8],
    channel: usize,
    start: StartAt,
    agent: Agent,
) {
    let job = StreamJob {
        stream,
        channel,
        start,
        agent,
    };
    if let Err(job) = node.streams.try_give(job) {
        let mut stream = job.stream;
        node.release_claim(channel);
        busy(node, &mut stream, response).await;
    }
}

/// Reads and discards what the client is still sending (bounded in bytes and
/// time) before closing, so that the close does not reset the connection and
/// destroy the error response before the client has read it.
async fn drain<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    stream: &mut N::Stream,
    buffer: &mut [u8],
) {
    const DRAIN_BYTES_MAX: usize = 256 * 1024;
    const DRAIN_MS: u64 = 1000;
    let deadline_ms = node.clock.now_ms() + DRAIN_MS;
    let mut drained = 0;
    while drained < DRAIN_BYTES_MAX {
        match stream.read(buffer) {
            Ok(0) => return,
            Ok(count) => drained += count,
            Err(error) if error.is_would_block() => {
                let ready = first_of(stream.readable(), node.clock.sleep_until(deadline_ms)).await;
                if let Either::Right(()) = ready {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

async fn busy<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    stream: &mut N::Stream,
    response: &mut [u8],
) {
    node.totals.http_rejected.increment();
    let mut w = SliceWriter::new(response);
    let body = b"busy: too many viewers, retry later\n";
    let _ = http::emit_response_head(
        &mut w,
        Status::ServiceUnavailable,
        "text/plain",
        body.len(),
        Some(RETRY_AFTER_S),
    );
    let _ = w.write_bytes(body);
    let length = w.len();
    write_all(node, stream, &response[..length]).await;
}

async fn send_status<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    stream: &mut N::Stream,
    response: &mut [u8],
    status: Status,
) {
    let mut w = SliceWriter::new(response);
    let reason = status.reason().as_bytes();
    let _ = http::emit_response_head(&mut w, status, "text/plain", reason.len() + 1, None);
    let _ = w.write_bytes(reason);
    let _ = w.write_bytes(b"\n");
    let length = w.len();
    write_all(node, stream, &response[..length]).await;
}

async fn send_stream_head<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    stream: &mut N::Stream,
    response: &mut [u8],
) {
    let mut w = SliceWriter::new(response);
    if http::emit_stream_head(&mut w, "video/mp2t", None).is_ok() {
        let length = w.len();
        write_all(node, stream, &response[..length]).await;
    }
}

/// The channel texts borrowed while a document renders (fixed capacity).
type BorrowedTexts<'a> = heapless::Vec<
    core::cell::Ref<'a, String>,
    { crate::limits::CHANNELS_MAX + crate::limits::ON_DEMAND_CHANNELS_MAX },
>;

/// Renders a document body at `offset` of `response`, returning its length.
fn render_document<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    route: DocumentRoute,
    local: SocketAddr,
    body: &mut [u8],
) -> Result<usize, core::fmt::Error> {
    let mut w = SliceWriter::new(body);
    let (bytes_in, bytes_out) = node.bytes_totals();
    let lan_http_report = node.portmap.lan_http.as_ref().map(|report| report.borrow());
    let daemon = DaemonView {
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: node.clock.now_ms() / 1000,
        alloc: crate::alloc_count::snapshot(),
        totals: &node.totals,
        bytes_in,
        bytes_out,
        node_id: &node.state.node_id_hex(),
        dlna_uuid: &node.state.dlna_uuid_text(),
        friendly_name: &node.state.friendly_name,
        boots: node.state.boots,
        state_path: &node.state_path,
        peer_port: node.settings.peer_port,
        portmap: &node.portmap.peer.borrow(),
        portmap_lan_http: lan_http_report.as_deref(),
        now_ms: node.clock.now_ms(),
        ssdp: node.ssdp.counters(),
    };
    let now_ms = node.clock.now_ms();
    let base = UrlBase(local);
    // Borrow every name and source for the duration of rendering.
    let borrowed: BorrowedTexts<'_> = node.channels.iter().map(|c| c.name.borrow()).collect();
    let sources: BorrowedTexts<'_> = node.channels.iter().map(|c| c.source.borrow()).collect();
    let views = || {
        node.channels
            .iter()
            .enumerate()
            .filter(|(_, channel)| !channel.is_free_slot())
            .map(|(index, channel)| ChannelView {
                name: borrowed[index].as_str(),
                source: sources[index].as_str(),
                state: channel.state.get(),
                input_bps: channel.stats.input_rate.bits_per_second(now_ms),
                ring_bytes: channel.ring.borrow().capacity_bytes(),
                timeshift_s: channel.ring.borrow().timeshift_ms() / 1000,
                stats: &channel.stats,
            })
    };
    match route {
        DocumentRoute::Status => lan::render_status_json(&mut w, &daemon, views())?,
        DocumentRoute::Dlna(DlnaDocument::Description) => {
            let mut presentation = heapless::String::<64>::new();
            let _ = write!(presentation, "{base}/");
            let device = dlna::Device {
                friendly_name: &node.state.friendly_name,
                uuid: &node.state.dlna_uuid_text(),
                version: env!("CARGO_PKG_VERSION"),
                presentation_url: &presentation,
            };
            dlna::render_description(&mut w, &device)?
        }
        DocumentRoute::Dlna(DlnaDocument::ContentDirectoryScpd) => {
            dlna::render_content_directory_scpd(&mut w)?
        }
        DocumentRoute::Dlna(DlnaDocument::ConnectionManagerScpd) => {
            dlna::render_connection_manager_scpd(&mut w)?
        }
        DocumentRoute::Metrics(family) => {
            match lan::metrics::render_family(&mut w, family, &daemon, views) {
                Some(rendered) => rendered?,
                None => return Ok(0),
            }
        }
        DocumentRoute::Index => lan::render_index_html(&mut w, &base, &daemon, views())?,
        DocumentRoute::Playlist => {
            let names = borrowed[..node.static_channels]
                .iter()
                .map(|name| name.as_str());
            lan::render_playlist(&mut w, &base, names)?
        }
    }
    Ok(w.len())
}

async fn send_document<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    stream: &mut N::Stream,
    response: &mut [u8],
    route: DocumentRoute,
    head_only: bool,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    // The body goes after room for the head, so both go out in one write.
    const HEAD_ROOM: usize = 512;
    let (head_part, body_part) = response.split_at_mut(HEAD_ROOM);
    let Ok(body_length) = render_document(node, route, local, body_part) else {
        return send_status(node, stream, response, Status::InternalServerError).await;
    };
    let content_type = match route {
        DocumentRoute::Status => "application/json",
        DocumentRoute::Index => "text/html; charset=utf-8",
        DocumentRoute::Playlist => "audio/x-mpegurl",
        DocumentRoute::Metrics(_) => lan::metrics::CONTENT_TYPE,
        DocumentRoute::Dlna(_) => XML_CONTENT_TYPE,
    };
    let mut w = SliceWriter::new(head_part);
    if http::emit_response_head(&mut w, Status::Ok, content_type, body_length, None).is_err() {
        return;
    }
    let head_length = w.len();
    // Move the head right before the body.
    response.copy_within(0..head_length, HEAD_ROOM - head_length);
    let start = HEAD_ROOM - head_length;
    let end = if head_only {
        HEAD_ROOM
    } else {
        HEAD_ROOM + body_length
    };
    write_all(node, stream, &response[start..end]).await;
}

/// The Content-Type of DLNA documents and SOAP answers (UPnP DA 1.0 §2.11).
const XML_CONTENT_TYPE: &str = "text/xml; charset=\"utf-8\"";

/// Bytes of one channel's stream URL in a Browse answer.
const ITEM_URL_BYTES_MAX: usize = 160;

/// Answers a SOAP control request: the action's answer (200) or a UPnP
/// fault (500), rendered from the static channels.
async fn send_control<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    stream: &mut N::Stream,
    response: &mut [u8],
    service: dlna::Service,
    soap_action: Option<&[u8]>,
    body: &[u8],
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    const HEAD_ROOM: usize = 512;
    let (head_part, body_part) = response.split_at_mut(HEAD_ROOM);
    let rendered = render_control(node, local, service, soap_action, body, body_part);
    let Ok((status, body_length)) = rendered else {
        return send_status(node, stream, response, Status::InternalServerError).await;
    };
    let status = if status == dlna::STATUS_OK {
        Status::Ok
    } else {
        Status::InternalServerError
    };
    let mut w = SliceWriter::new(head_part);
    if http::emit_response_head(&mut w, status, XML_CONTENT_TYPE, body_length, None).is_err() {
        return;
    }
    let head_length = w.len();
    response.copy_within(0..head_length, HEAD_ROOM - head_length);
    write_all(
        node,
        stream,
        &response[HEAD_ROOM - head_length..HEAD_ROOM + body_length],
    )
    .await;
}

/// Renders a control answer into `body`: (HTTP status, length).
fn render_control<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    local: SocketAddr,
    service: dlna::Service,
    soap_action: Option<&[u8]>,
    request: &[u8],
    body: &mut [u8],
) -> Result<(u16, usize), crate::wire::Full> {
    let base = UrlBase(local);
    let names: BorrowedTexts<'_> = node.channels[..node.static_channels]
        .iter()
        .map(|c| c.name.borrow())
        .collect();
    let mut urls: heapless::Vec<heapless::String<ITEM_URL_BYTES_MAX>, { dlna::ITEMS_MAX }> =
        heapless::Vec::new();
    for name in names.iter().take(dlna::ITEMS_MAX) {
        let mut url = heapless::String::new();
        let _ = write!(url, "{base}/channel/{}.ts", name.as_str());
        let _ = urls.push(url);
    }
    let mut items: heapless::Vec<dlna::Item<'_>, { dlna::ITEMS_MAX }> = heapless::Vec::new();
    for (index, (name, url)) in names.iter().zip(urls.iter()).enumerate() {
        let _ = items.push(dlna::Item {
            id_index: index,
            title: name.as_str(),
            url: url.as_str(),
        });
    }
    let library = dlna::slice_library(&items, node.dlna_update_id.get(), &node.state.friendly_name);
    let mut w = SliceWriter::new(body);
    let status = dlna::render_control(&mut w, service, soap_action, request, &library)?;
    Ok((status, w.len()))
}

/// Sends `/metrics` family by family, each rendered into `response` and
/// written before the next: any number of channels fits. The body ends
/// when the connection closes (no Content-Length), as HTTP/1.1 allows.
async fn send_metrics<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    stream: &mut N::Stream,
    response: &mut [u8],
    head_only: bool,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let mut w = SliceWriter::new(response);
    if http::emit_open_ended_head(&mut w, lan::metrics::CONTENT_TYPE).is_err() {
        return;
    }
    let length = w.len();
    if !write_all(node, stream, &response[..length]).await || head_only {
        return;
    }
    for family in 0.. {
        match render_document(node, DocumentRoute::Metrics(family), local, response) {
            Ok(0) => return,
            Ok(length) => {
                if !write_all(node, stream, &response[..length]).await {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

impl<N: Net + 'static, C: Clock + 'static> Node<N, C> {
    /// Control workers busy with a connection from `host` (or just handed
    /// one: the acceptor counts those it gave but a worker has not started).
    fn control_busy_for(&self, host: core::net::IpAddr) -> usize {
        self.control_hosts
            .borrow()
            .iter()
            .filter(|busy| **busy == Some(host))
            .count()
    }

    /// Finds the on-demand slot already tuned to `target`, or tunes a free
    /// one, and counts a pending reader on it. `None` when every slot is busy.
    pub(super) fn claim_on_demand(&self, target: OnDemand) -> Option<usize> {
        let tuned = self.channels.iter().position(|c| {
            c.on_demand
                .as_ref()
                .is_some_and(|s| s.key.get() == Some(target))
        });
        let index = match tuned {
            Some(index) => index,
            None => {
                let index = self.channels.iter().position(|c| c.is_free_slot())?;
                self.tune(index, target);
                index
            }
        };
        let slot = self.channels[index].on_demand.as_ref()?;
        slot.pending.set(slot.pending.get() + 1);
        Some(index)
    }

    /// Forgets a pending on-demand reader that never started.
    pub(super) fn release_claim(&self, index: usize) {
        if let Some(slot) = self.channels[index].on_demand.as_ref() {
            slot.pending.set(slot.pending.get().saturating_sub(1));
            slot.last_reader_left_ms.set(self.clock.now_ms());
        }
    }

    fn tune(&self, index: usize, target: OnDemand) {
        use core::fmt::Write as _;
        let channel = &self.channels[index];
        let Some(slot) = channel.on_demand.as_ref() else {
            return;
        };
        slot.key.set(Some(target));
        slot.last_reader_left_ms.set(self.clock.now_ms());
        let mut name = channel.name.borrow_mut();
        name.clear();
        let _ = write!(name, "{target}");
        // Shown as `udp/GROUP:PORT`: the path without its leading slash.
        if name.starts_with('/') {
            name.remove(0);
        }
        let mut source = channel.source.borrow_mut();
        source.clear();
        let _ = write!(source, "{target}");
        channel.ring.borrow_mut().restart();
        channel.state.set(crate::lan::ChannelState::Connecting);
        if let Some(waker) = slot.activation.borrow_mut().take() {
            waker.wake();
        }
    }
}
