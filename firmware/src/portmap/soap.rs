//! SOAP control of an IGD's WANIPConnection / WANPPPConnection service
//! (UPnP Device Architecture 1.1 §3.2, WANIPConnection:2 service template):
//! rendering one whole HTTP `POST` per action, and reading its reply or its
//! UPnP fault.
//!
//! Requests follow what every IGD accepts: `SOAPAction: "<type>#<action>"`,
//! an exact `Content-Length`, arguments in the order of the service
//! template, an empty `NewRemoteHost` (any remote host), `NewEnabled` 1 and
//! a non-empty, XML-escaped description. Replies are read tolerantly by
//! local name (any namespace prefix), and an `errorCode` anywhere in the
//! body makes the reply a [`Reply::Fault`] whatever the HTTP status. Nothing
//! here does I/O or allocates.

use core::fmt::{self, Write};
use core::net::Ipv4Addr;

use heapless::String;

use crate::portmap::httpc::HttpUrl;
use crate::portmap::xml::{Event, Scanner, TextBuffer};
use crate::wire::ssdp::USER_AGENT;
use crate::wire::{Full, SliceWriter};

/// Bytes of one reply argument kept for reading (an IPv4 address is 15).
pub const VALUE_BYTES_MAX: usize = 64;

/// Bytes of a rendered request: head, envelope and the longest description
/// fit in well under this.
pub const REQUEST_BYTES_MAX: usize = 2048;

/// Sent when the caller's description is empty: some IGDs refuse an empty
/// `NewPortMappingDescription`.
pub const DESCRIPTION_DEFAULT: &str = "ringcast";

const ENVELOPE_START: &str = "<?xml version=\"1.0\"?>\r\n\
<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>";
const ENVELOPE_END: &str = "</s:Body></s:Envelope>\r\n";

/// Transport protocol of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The `NewProtocol` value.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// The WANIPConnection actions the client uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    GetStatusInfo,
    GetExternalIPAddress,
    AddPortMapping {
        external_port: u16,
        protocol: Protocol,
        internal_port: u16,
        internal_client: Ipv4Addr,
        description: &'a str,
        lease_s: u32,
    },
    /// WANIPConnection:2 only; the IGD may pick another external port.
    AddAnyPortMapping {
        external_port: u16,
        protocol: Protocol,
        internal_port: u16,
        internal_client: Ipv4Addr,
        description: &'a str,
        lease_s: u32,
    },
    GetSpecificPortMappingEntry {
        external_port: u16,
        protocol: Protocol,
    },
    DeletePortMapping {
        external_port: u16,
        protocol: Protocol,
    },
}

impl Action<'_> {
    /// The action name, as in `SOAPAction` and the envelope.
    pub fn name(&self) -> &'static str {
        match self {
            Action::GetStatusInfo => "GetStatusInfo",
            Action::GetExternalIPAddress => "GetExternalIPAddress",
            Action::AddPortMapping { .. } => "AddPortMapping",
            Action::AddAnyPortMapping { .. } => "AddAnyPortMapping",
            Action::GetSpecificPortMappingEntry { .. } => "GetSpecificPortMappingEntry",
            Action::DeletePortMapping { .. } => "DeletePortMapping",
        }
    }
}

/// Renders the whole `POST` of `action` to the service of type
/// `service_type` at `control` into `out`; returns its length. A service
/// type or path that would break the message (quotes, spaces, controls) is
/// refused like a full buffer.
pub fn write_request(
    out: &mut [u8],
    control: &HttpUrl,
    service_type: &str,
    action: &Action<'_>,
) -> Result<usize, Full> {
    let visible = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic());
    if !visible(service_type) || service_type.contains('"') || !visible(&control.path) {
        return Err(Full);
    }
    let mut counter = ByteCounter(0);
    write_envelope(&mut counter, service_type, action)?;
    let mut w = SliceWriter::new(out);
    write!(
        w,
        "POST {} HTTP/1.1\r\n\
         Host: {}\r\n\
         User-Agent: {USER_AGENT}\r\n\
         Content-Type: text/xml; charset=\"utf-8\"\r\n\
         SOAPAction: \"{service_type}#{}\"\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n",
        control.path,
        control.addr,
        action.name(),
        counter.0
    )?;
    write_envelope(&mut w, service_type, action)?;
    Ok(w.len())
}

/// Counts the bytes a rendering would take.
struct ByteCounter(usize);

impl Write for ByteCounter {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0 += text.len();
        Ok(())
    }
}

fn write_envelope(w: &mut impl Write, service_type: &str, action: &Action<'_>) -> fmt::Result {
    let name = action.name();
    write!(
        w,
        "{ENVELOPE_START}<u:{name} xmlns:u=\"{}\">",
        Escaped(service_type)
    )?;
    write_arguments(w, action)?;
    write!(w, "</u:{name}>{ENVELOPE_END}")
}

/// The input arguments, in service template order.
fn write_arguments(w: &mut impl Write, action: &Action<'_>) -> fmt::Result {
    match *action {
        Action::GetStatusInfo | Action::GetExternalIPAddress => Ok(()),
        Action::AddPortMapping {
            external_port,
            protocol,
            internal_port,
            internal_client,
            description,
            lease_s,
        }
        | Action::AddAnyPortMapping {
            external_port,
            protocol,
            internal_port,
            internal_client,
            description,
            lease_s,
        } => {
            write_mapping_key(w, external_port, protocol)?;
            let description = if description.is_empty() {
                DESCRIPTION_DEFAULT
            } else {
                description
            };
            argument(w, "NewInternalPort", internal_port)?;
            argument(w, "NewInternalClient", internal_client)?;
            argument(w, "NewEnabled", 1)?;
            argument(w, "NewPortMappingDescription", Escaped(description))?;
            argument(w, "NewLeaseDuration", lease_s)
        }
        Action::GetSpecificPortMappingEntry {
            external_port,
            protocol,
        }
        | Action::DeletePortMapping {
            external_port,
            protocol,
        } => write_mapping_key(w, external_port, protocol),
    }
}

/// `NewRemoteHost` (empty: any), `NewExternalPort`, `NewProtocol`.
fn write_mapping_key(w: &mut impl Write, external_port: u16, protocol: Protocol) -> fmt::Result {
    w.write_str("<NewRemoteHost></NewRemoteHost>")?;
    argument(w, "NewExternalPort", external_port)?;
    argument(w, "NewProtocol", protocol.as_str())
}

fn argument(w: &mut impl Write, name: &str, value: impl fmt::Display) -> fmt::Result {
    write!(w, "<{name}>{value}</{name}>")
}

/// Text with the XML specials escaped and control characters (not allowed
/// in XML 1.0 even escaped) replaced by spaces.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for character in self.0.chars() {
            match character {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&apos;")?,
                c if c.is_control() => f.write_char(' ')?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// What an action answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    StatusInfo {
        /// `NewConnectionStatus` is `Connected`.
        connected: bool,
    },
    /// `NewExternalIPAddress`; `None` if empty or not an IPv4 address.
    ExternalIp(Option<Ipv4Addr>),
    Added,
    AddedAny {
        /// `NewReservedPort`: the external port the IGD chose.
        external_port: u16,
    },
    Entry {
        internal_client: Option<Ipv4Addr>,
        internal_port: u16,
        enabled: bool,
        lease_s: u32,
    },
    Deleted,
    /// A UPnP error; see [`error_meaning`].
    Fault {
        code: u16,
    },
}

/// Why a reply could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoapError {
    /// An HTTP status other than 200, without a UPnP error code.
    Status(u16),
    /// No `<ActionResponse>` element, or XML broken before it.
    Malformed,
    /// A required output argument is missing.
    MissingArgument(&'static str),
    /// An output argument has a value of the wrong form.
    BadArgument(&'static str),
}

impl fmt::Display for SoapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SoapError::Status(status) => {
                write!(f, "IGD answered HTTP {status} without a UPnP error")
            }
            SoapError::Malformed => f.write_str("malformed SOAP response"),
            SoapError::MissingArgument(name) => write!(f, "SOAP response lacks {name}"),
            SoapError::BadArgument(name) => write!(f, "SOAP response has a bad {name}"),
        }
    }
}

/// The output arguments read from replies (and the fault code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Argument {
    ConnectionStatus,
    ExternalIpAddress,
    ReservedPort,
    InternalClient,
    InternalPort,
    Enabled,
    LeaseDuration,
    ErrorCode,
}

const ARGUMENTS: [(&str, Argument); 8] = [
    ("NewConnectionStatus", Argument::ConnectionStatus),
    ("NewExternalIPAddress", Argument::ExternalIpAddress),
    ("NewReservedPort", Argument::ReservedPort),
    ("NewInternalClient", Argument::InternalClient),
    ("NewInternalPort", Argument::InternalPort),
    ("NewEnabled", Argument::Enabled),
    ("NewLeaseDuration", Argument::LeaseDuration),
    ("errorCode", Argument::ErrorCode),
];

type Value = String<VALUE_BYTES_MAX>;

/// Reads the reply to `action` from an HTTP `status` and `body`.
pub fn parse_response(action: &Action<'_>, status: u16, body: &[u8]) -> Result<Reply, SoapError> {
    let values = Values::scan(body, action.name());
    if let Some(code) = values.get(Argument::ErrorCode) {
        let code = code
            .parse()
            .map_err(|_| SoapError::BadArgument("errorCode"))?;
        return Ok(Reply::Fault { code });
    }
    if status != 200 {
        return Err(SoapError::Status(status));
    }
    if !values.response_seen {
        return Err(SoapError::Malformed);
    }
    values.reply(action)
}

/// Argument values found in one reply.
struct Values {
    /// The `<ActionResponse>` element was opened.
    response_seen: bool,
    values: [Option<Value>; ARGUMENTS.len()],
}

impl Values {
    fn get(&self, argument: Argument) -> Option<&str> {
        self.values[argument as usize].as_deref()
    }

    fn scan(body: &[u8], action_name: &str) -> Self {
        let mut values = Values {
            response_seen: false,
            values: Default::default(),
        };
        let mut walk = Walk {
            depth: 0,
            response_depth: None,
            field: None,
            text: TextBuffer::new(),
        };
        let mut scanner = Scanner::new(body);
        while let Some(event) = scanner.next() {
            walk.handle(
                event,
                scanner.last_text_is_cdata(),
                action_name,
                &mut values,
            );
        }
        values
    }

    fn reply(&self, action: &Action<'_>) -> Result<Reply, SoapError> {
        Ok(match action {
            Action::GetStatusInfo => {
                let status = self.required(Argument::ConnectionStatus)?;
                Reply::StatusInfo {
                    connected: status.eq_ignore_ascii_case("Connected"),
                }
            }
            Action::GetExternalIPAddress => Reply::ExternalIp(
                self.get(Argument::ExternalIpAddress)
                    .and_then(|text| text.parse().ok()),
            ),
            Action::AddPortMapping { .. } => Reply::Added,
            Action::AddAnyPortMapping { .. } => Reply::AddedAny {
                external_port: self.port(Argument::ReservedPort)?,
            },
            Action::GetSpecificPortMappingEntry { .. } => self.entry()?,
            Action::DeletePortMapping { .. } => Reply::Deleted,
        })
    }

    fn entry(&self) -> Result<Reply, SoapError> {
        let enabled = match self.get(Argument::Enabled) {
            None | Some("1") => true,
            Some("0") => false,
            Some(text) if text.eq_ignore_ascii_case("true") => true,
            Some(text) if text.eq_ignore_ascii_case("false") => false,
            Some(_) => return Err(SoapError::BadArgument(name(Argument::Enabled))),
        };
        let lease_s = match self.get(Argument::LeaseDuration) {
            None | Some("") => 0,
            Some(text) => text
                .parse()
                .map_err(|_| SoapError::BadArgument(name(Argument::LeaseDuration)))?,
        };
        Ok(Reply::Entry {
            internal_client: self
                .get(Argument::InternalClient)
                .and_then(|text| text.parse().ok()),
            internal_port: self.port(Argument::InternalPort)?,
            enabled,
            lease_s,
        })
    }

    fn required(&self, argument: Argument) -> Result<&str, SoapError> {
        self.get(argument)
            .ok_or(SoapError::MissingArgument(name(argument)))
    }

    /// A non-zero port number.
    fn port(&self, argument: Argument) -> Result<u16, SoapError> {
        let text = self.required(argument)?;
        text.parse()
            .ok()
            .filter(|&port| port != 0)
            .ok_or(SoapError::BadArgument(name(argument)))
    }
}

/// The element name of an argument.
fn name(argument: Argument) -> &'static str {
    ARGUMENTS
        .iter()
        .find(|(_, known)| *known == argument)
        .map_or("argument", |(name, _)| name)
}

/// The state of one pass over a reply's events.
struct Walk {
    depth: usize,
    /// Depth of the open `<ActionResponse>` element.
    response_depth: Option<usize>,
    /// The argument being collected and the depth of its element.
    field: Option<(Argument, usize)>,
    text: TextBuffer<VALUE_BYTES_MAX>,
}

impl Walk {
    fn handle(&mut self, event: Event<'_>, cdata: bool, action_name: &str, values: &mut Values) {
        match event {
            Event::Start(name) => {
                self.depth += 1;
                if self.field.is_none() {
                    self.start(name, action_name, values);
                }
            }
            Event::Text(raw) if self.field.is_some() => self.text.push(raw, cdata),
            Event::Text(_) => {}
            Event::End(_) => {
                if let Some((argument, depth)) = self.field {
                    if depth == self.depth {
                        self.field = None;
                        let slot = &mut values.values[argument as usize];
                        if slot.is_none() {
                            *slot = self.text.trimmed().and_then(|t| Value::try_from(t).ok());
                        }
                    }
                }
                if self.response_depth == Some(self.depth) {
                    self.response_depth = None;
                }
                self.depth = self.depth.saturating_sub(1);
            }
        }
    }

    fn start(&mut self, name: &[u8], action_name: &str, values: &mut Values) {
        if is_response_name(name, action_name) {
            self.response_depth.get_or_insert(self.depth);
            values.response_seen = true;
            return;
        }
        let Some(&(_, argument)) = ARGUMENTS
            .iter()
            .find(|(known, _)| name.eq_ignore_ascii_case(known.as_bytes()))
        else {
            return;
        };
        if argument == Argument::ErrorCode || self.response_depth.is_some() {
            self.field = Some((argument, self.depth));
            self.text.clear();
        }
    }
}

/// `<ActionName>Response`, in any case.
fn is_response_name(name: &[u8], action_name: &str) -> bool {
    let Some((head, tail)) = name.split_at_checked(action_name.len()) else {
        return false;
    };
    head.eq_ignore_ascii_case(action_name.as_bytes()) && tail.eq_ignore_ascii_case(b"Response")
}

/// A short description of a UPnP IGD error code, for logs.
pub const fn error_meaning(code: u16) -> &'static str {
    match code {
        401 => "action not supported by this IGD",
        402 => "arguments rejected",
        501 => "action failed inside the IGD",
        606 => "not authorised to do this",
        713 => "array index out of range",
        714 => "no such port mapping",
        715 => "source address must not be a wildcard",
        716 => "external port must not be a wildcard",
        718 => "mapping conflicts with an existing one",
        724 => "internal and external port must be equal",
        725 => "only permanent (lease 0) mappings accepted",
        726 => "remote host must be a wildcard",
        727 => "external port must be a wildcard",
        728 => "no free ports left for mappings",
        729 => "conflicts with a mapping made by another mechanism",
        732 => "internal port must not be a wildcard",
        733 => "inconsistent arguments",
        _ => "unknown UPnP error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portmap::httpc::parse_http_url;
    extern crate std;
    use std::vec::Vec;

    const IP_TYPE_2: &str = "urn:schemas-upnp-org:service:WANIPConnection:2";

    fn control() -> HttpUrl {
        parse_http_url("http://192.168.77.1:5000/ctl/IPConn").unwrap()
    }

    fn add(description: &str) -> Action<'_> {
        Action::AddPortMapping {
            external_port: 7144,
            protocol: Protocol::Tcp,
            internal_port: 7144,
            internal_client: Ipv4Addr::new(192, 168, 77, 10),
            description,
            lease_s: 3600,
        }
    }

    fn render(service_type: &str, action: &Action<'_>) -> Vec<u8> {
        let mut out = [0u8; REQUEST_BYTES_MAX];
        let length = write_request(&mut out, &control(), service_type, action).unwrap();
        out[..length].to_vec()
    }

    #[test]
    fn golden_add_port_mapping() {
        let bytes = render(IP_TYPE_2, &add("ringcast <ch1> & \"tv\"\n"));
        let body = concat!(
            "<?xml version=\"1.0\"?>\r\n",
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" ",
            "s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>",
            "<u:AddPortMapping xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:2\">",
            "<NewRemoteHost></NewRemoteHost><NewExternalPort>7144</NewExternalPort>",
            "<NewProtocol>TCP</NewProtocol><NewInternalPort>7144</NewInternalPort>",
            "<NewInternalClient>192.168.77.10</NewInternalClient><NewEnabled>1</NewEnabled>",
            "<NewPortMappingDescription>ringcast &lt;ch1&gt; &amp; &quot;tv&quot; </NewPortMappingDescription>",
            "<NewLeaseDuration>3600</NewLeaseDuration>",
            "</u:AddPortMapping></s:Body></s:Envelope>\r\n"
        );
        let head = std::format!(
            "POST /ctl/IPConn HTTP/1.1\r\n\
             Host: 192.168.77.1:5000\r\n\
             User-Agent: {USER_AGENT}\r\n\
             Content-Type: text/xml; charset=\"utf-8\"\r\n\
             SOAPAction: \"urn:schemas-upnp-org:service:WANIPConnection:2#AddPortMapping\"\r\n\
             Content-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), head + body);
    }

    #[test]
    fn requests_of_every_action() {
        let key = |external_port| (external_port, Protocol::Udp);
        let (external_port, protocol) = key(5000);
        let actions = [
            (Action::GetStatusInfo, "<u:GetStatusInfo xmlns:u=\"t:1\"></u:GetStatusInfo>"),
            (
                Action::GetExternalIPAddress,
                "<u:GetExternalIPAddress xmlns:u=\"t:1\"></u:GetExternalIPAddress>",
            ),
            (
                Action::GetSpecificPortMappingEntry { external_port, protocol },
                "<NewRemoteHost></NewRemoteHost><NewExternalPort>5000</NewExternalPort><NewProtocol>UDP</NewProtocol></u:GetSpecificPortMappingEntry>",
            ),
            (
                Action::DeletePortMapping { external_port, protocol },
                "SOAPAction: \"t:1#DeletePortMapping\"",
            ),
            (
                Action::AddAnyPortMapping {
                    external_port,
                    protocol,
                    internal_port: 5001,
                    internal_client: Ipv4Addr::new(10, 0, 0, 2),
                    description: "",
                    lease_s: 0,
                },
                "<NewPortMappingDescription>ringcast</NewPortMappingDescription><NewLeaseDuration>0</NewLeaseDuration></u:AddAnyPortMapping>",
            ),
        ];
        for (action, needle) in actions {
            let bytes = render("t:1", &action);
            let text = std::str::from_utf8(&bytes).unwrap();
            assert!(text.contains(needle), "{text}");
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&std::format!("Content-Length: {}\r\n", body.len())));
        }
    }

    #[test]
    fn request_refusals() {
        let mut out = [0u8; REQUEST_BYTES_MAX];
        let bad_types = ["", "a\"b", "a b", "t\r\nX: 1"];
        for service_type in bad_types {
            let result = write_request(&mut out, &control(), service_type, &Action::GetStatusInfo);
            assert_eq!(result, Err(Full), "{service_type:?}");
        }
        let mut small = [0u8; 300];
        let result = write_request(&mut small, &control(), IP_TYPE_2, &add("x"));
        assert_eq!(result, Err(Full));
    }

    /// Bodies captured from miniupnpd 2.3.1 (IGDv2) in the test bed.
    const ENVELOPE: &str = "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>";

    fn miniupnpd(inner: &str) -> std::string::String {
        std::format!("{ENVELOPE}{inner}</s:Body></s:Envelope>\r\n")
    }

    fn miniupnpd_fault(code: u16, text: &str) -> std::string::String {
        std::format!(
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{code}</errorCode><errorDescription>{text}</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>"
        )
    }

    #[test]
    fn miniupnpd_replies() {
        let u = "xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:2\"";
        let key = (7144, Protocol::Tcp);
        let (external_port, protocol) = key;
        let cases = [
            (
                Action::GetStatusInfo,
                std::format!("<u:GetStatusInfoResponse {u}><NewConnectionStatus>Connected</NewConnectionStatus><NewLastConnectionError>ERROR_NONE</NewLastConnectionError><NewUptime>11</NewUptime></u:GetStatusInfoResponse>"),
                Reply::StatusInfo { connected: true },
            ),
            (
                Action::GetExternalIPAddress,
                std::format!("<u:GetExternalIPAddressResponse {u}><NewExternalIPAddress>11.0.0.2</NewExternalIPAddress></u:GetExternalIPAddressResponse>"),
                Reply::ExternalIp(Some(Ipv4Addr::new(11, 0, 0, 2))),
            ),
            (add("x"), std::format!("<u:AddPortMappingResponse {u}/>"), Reply::Added),
            (
                Action::AddAnyPortMapping {
                    external_port,
                    protocol,
                    internal_port: 7144,
                    internal_client: Ipv4Addr::new(192, 168, 77, 10),
                    description: "x",
                    lease_s: 600,
                },
                std::format!("<u:AddAnyPortMappingResponse {u}><NewReservedPort>41234</NewReservedPort></u:AddAnyPortMappingResponse>"),
                Reply::AddedAny { external_port: 41234 },
            ),
            (
                Action::GetSpecificPortMappingEntry { external_port, protocol },
                std::format!("<u:GetSpecificPortMappingEntryResponse {u}><NewInternalPort>41234</NewInternalPort><NewInternalClient>192.168.77.10</NewInternalClient><NewEnabled>1</NewEnabled><NewPortMappingDescription>ringcast &amp; test</NewPortMappingDescription><NewLeaseDuration>600</NewLeaseDuration></u:GetSpecificPortMappingEntryResponse>"),
                Reply::Entry {
                    internal_client: Some(Ipv4Addr::new(192, 168, 77, 10)),
                    internal_port: 41234,
                    enabled: true,
                    lease_s: 600,
                },
            ),
            (
                Action::DeletePortMapping { external_port, protocol },
                std::format!("<u:DeletePortMappingResponse {u}></u:DeletePortMappingResponse>"),
                Reply::Deleted,
            ),
        ];
        for (action, inner, reply) in cases {
            let body = miniupnpd(&inner);
            assert_eq!(
                parse_response(&action, 200, body.as_bytes()),
                Ok(reply),
                "{inner}"
            );
        }
    }

    #[test]
    fn miniupnpd_faults() {
        let cases = [
            (714, "NoSuchEntryInArray"),
            (718, "ConflictInMappingEntry"),
            (401, "Invalid Action"),
            (725, "OnlyPermanentLeasesSupported"),
        ];
        for (code, text) in cases {
            let body = miniupnpd_fault(code, text);
            let reply = parse_response(&add("x"), 500, body.as_bytes());
            assert_eq!(reply, Ok(Reply::Fault { code }));
        }
        let bad = miniupnpd_fault(0, "x").replace(">0<", ">seven<");
        assert_eq!(
            parse_response(&add("x"), 500, bad.as_bytes()),
            Err(SoapError::BadArgument("errorCode"))
        );
    }

    /// The shape of AVM and other vendor stacks: other prefixes, white
    /// space, an empty address while offline, PPP disconnected.
    #[test]
    fn vendor_style_replies() {
        let body = r#"<?xml version="1.0"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">
  <SOAP-ENV:Body>
    <m:GetStatusInfoResponse xmlns:m="urn:schemas-upnp-org:service:WANPPPConnection:1">
      <NewConnectionStatus> Disconnected </NewConnectionStatus>
      <NewLastConnectionError>ERROR_NO_CARRIER</NewLastConnectionError>
    </m:GetStatusInfoResponse>
  </SOAP-ENV:Body>
</SOAP-ENV:Envelope>
"#;
        let reply = parse_response(&Action::GetStatusInfo, 200, body.as_bytes());
        assert_eq!(reply, Ok(Reply::StatusInfo { connected: false }));

        let empty_ip = body
            .replace("GetStatusInfoResponse", "GetExternalIPAddressResponse")
            .replace(
                "<NewConnectionStatus> Disconnected </NewConnectionStatus>",
                "<NewExternalIPAddress/>",
            );
        let reply = parse_response(&Action::GetExternalIPAddress, 200, empty_ip.as_bytes());
        assert_eq!(reply, Ok(Reply::ExternalIp(None)));

        let cdata_ip = miniupnpd("<m:GetExternalIPAddressResponse><NewExternalIPAddress><![CDATA[ 100.64.1.2 ]]></NewExternalIPAddress></m:GetExternalIPAddressResponse>");
        let reply = parse_response(&Action::GetExternalIPAddress, 200, cdata_ip.as_bytes());
        assert_eq!(
            reply,
            Ok(Reply::ExternalIp(Some(Ipv4Addr::new(100, 64, 1, 2))))
        );
    }

    #[test]
    fn reply_errors() {
        let key = Action::DeletePortMapping {
            external_port: 1,
            protocol: Protocol::Tcp,
        };
        let html = b"<html><body>401 Unauthorized</body></html>";
        assert_eq!(parse_response(&key, 401, html), Err(SoapError::Status(401)));
        assert_eq!(parse_response(&key, 200, html), Err(SoapError::Malformed));
        assert_eq!(parse_response(&key, 200, b""), Err(SoapError::Malformed));
        let other = miniupnpd("<u:AddPortMappingResponse/>");
        assert_eq!(
            parse_response(&key, 200, other.as_bytes()),
            Err(SoapError::Malformed)
        );

        let no_status = miniupnpd(
            "<u:GetStatusInfoResponse><NewUptime>1</NewUptime></u:GetStatusInfoResponse>",
        );
        assert_eq!(
            parse_response(&Action::GetStatusInfo, 200, no_status.as_bytes()),
            Err(SoapError::MissingArgument("NewConnectionStatus"))
        );
        // An argument outside the response element does not count.
        let outside = miniupnpd(
            "<NewConnectionStatus>Connected</NewConnectionStatus><u:GetStatusInfoResponse/>",
        );
        assert_eq!(
            parse_response(&Action::GetStatusInfo, 200, outside.as_bytes()),
            Err(SoapError::MissingArgument("NewConnectionStatus"))
        );
        let any = Action::AddAnyPortMapping {
            external_port: 1,
            protocol: Protocol::Udp,
            internal_port: 1,
            internal_client: Ipv4Addr::new(10, 0, 0, 2),
            description: "x",
            lease_s: 0,
        };
        let zero = miniupnpd("<u:AddAnyPortMappingResponse><NewReservedPort>0</NewReservedPort></u:AddAnyPortMappingResponse>");
        assert_eq!(
            parse_response(&any, 200, zero.as_bytes()),
            Err(SoapError::BadArgument("NewReservedPort"))
        );
        let entry = Action::GetSpecificPortMappingEntry {
            external_port: 1,
            protocol: Protocol::Udp,
        };
        let lease = miniupnpd("<u:GetSpecificPortMappingEntryResponse><NewInternalPort>5</NewInternalPort><NewEnabled>0</NewEnabled><NewInternalClient>host</NewInternalClient><NewLeaseDuration>-1</NewLeaseDuration></u:GetSpecificPortMappingEntryResponse>");
        assert_eq!(
            parse_response(&entry, 200, lease.as_bytes()),
            Err(SoapError::BadArgument("NewLeaseDuration"))
        );
        let fine = lease.replace("-1", "");
        assert_eq!(
            parse_response(&entry, 200, fine.as_bytes()),
            Ok(Reply::Entry {
                internal_client: None,
                internal_port: 5,
                enabled: false,
                lease_s: 0
            })
        );
    }

    #[test]
    fn error_meanings() {
        assert_eq!(error_meaning(714), "no such port mapping");
        assert_eq!(error_meaning(12345), "unknown UPnP error");
        for code in [
            401, 402, 501, 606, 713, 714, 715, 716, 718, 724, 725, 726, 727, 728, 729,
        ] {
            assert_ne!(error_meaning(code), "unknown UPnP error", "{code}");
        }
        assert_eq!(
            std::format!("{}", SoapError::MissingArgument("NewReservedPort")),
            "SOAP response lacks NewReservedPort"
        );
    }
}
