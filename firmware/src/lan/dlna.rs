//! The DLNA media server (DMS-1.50) as pure functions: the device description,
//! the two SCPD documents, reading a SOAP control request and rendering its
//! answer or its UPnP fault. Nothing here does I/O, reads a clock or
//! allocates: documents render into a caller-owned [`SliceWriter`] and
//! requests are read by borrowing, with argument values copied into small
//! fixed buffers.
//!
//! Specs: UPnP Device Architecture 1.0 (§2 description, §3 control and
//! faults), ContentDirectory:1 and ConnectionManager:1 service templates,
//! UPnP AV ContentDirectory:1 DIDL-Lite, the DLNA guidelines (the 4th field
//! of protocolInfo, `X_DLNADOC`) and Samsung's `X_GetFeatureList`.
//!
//! The library is one root container, `"0"`, holding one video item per
//! channel (`"ch<index>"`). Requests are read tolerantly (local names, any
//! namespace prefix, entities unescaped, action name from the `SOAPACTION`
//! header or else the body), and every answer the caller hands back to the
//! network is well-formed XML with each text escaped where it lands: titles
//! and URLs once inside DIDL-Lite, then the whole DIDL-Lite once more as the
//! text of `<Result>`.

use core::fmt::{self, Write};

use heapless::String;

use crate::portmap::xml::{self, Event, Scanner, TextBuffer};
use crate::wire::{Full, SliceWriter};

/// The device description (the SSDP `LOCATION`).
pub const DESCRIPTION_PATH: &str = "/dlna/description.xml";
/// ContentDirectory's SCPD.
pub const CONTENT_DIRECTORY_SCPD_PATH: &str = "/dlna/ContentDirectory.xml";
/// ConnectionManager's SCPD.
pub const CONNECTION_MANAGER_SCPD_PATH: &str = "/dlna/ConnectionManager.xml";
/// ContentDirectory's control URL (SOAP `POST`).
pub const CONTENT_DIRECTORY_CONTROL_PATH: &str = "/dlna/control/ContentDirectory";
/// ConnectionManager's control URL (SOAP `POST`).
pub const CONNECTION_MANAGER_CONTROL_PATH: &str = "/dlna/control/ConnectionManager";
/// ContentDirectory's event URL. Eventing is not implemented: the URL is
/// only named because the description must name one.
pub const CONTENT_DIRECTORY_EVENT_PATH: &str = "/dlna/event/ContentDirectory";
/// ConnectionManager's event URL (not implemented, as above).
pub const CONNECTION_MANAGER_EVENT_PATH: &str = "/dlna/event/ConnectionManager";

/// The device type, also an SSDP search target.
pub const DEVICE_TYPE: &str = "urn:schemas-upnp-org:device:MediaServer:1";
/// ContentDirectory's service type, also an SSDP search target.
pub const CONTENT_DIRECTORY_TYPE: &str = "urn:schemas-upnp-org:service:ContentDirectory:1";
/// ConnectionManager's service type, also an SSDP search target.
pub const CONNECTION_MANAGER_TYPE: &str = "urn:schemas-upnp-org:service:ConnectionManager:1";

/// `DLNA.ORG_FLAGS` primary flag bits (DLNA guidelines 7.4.1.3.24; the
/// field is these 32 bits in hex followed by 24 reserved zero digits).
///
/// Streaming transfer mode: the content is played as it arrives.
pub const FLAG_STREAMING_TRANSFER: u32 = 1 << 24;
/// Background transfer mode is supported as well.
pub const FLAG_BACKGROUND_TRANSFER: u32 = 1 << 22;
/// Connection stalling: a player may pause by not reading, and the
/// connection is kept (the reader's cursor falls behind and is moved to a
/// keyframe near the live edge when it reads again, or dropped at last).
pub const FLAG_CONNECTION_STALLING: u32 = 1 << 21;
/// DLNA 1.5 versioning: required whenever any of bits 20..=23 is set.
pub const FLAG_DLNA_V15: u32 = 1 << 20;
/// The flags we state for every channel. Not set: sender paced (bit 31) and
/// the limited random access bits (30, 29): a live stream has no range.
pub const DLNA_FLAGS: u32 =
    FLAG_STREAMING_TRANSFER | FLAG_BACKGROUND_TRANSFER | FLAG_CONNECTION_STALLING | FLAG_DLNA_V15;

/// The 4th field of protocolInfo without a `DLNA.ORG_PN` profile (the codec is
/// not known in advance): `OP=00` no time or byte seeking (live), `CI=0` not
/// transcoded, and [`DLNA_FLAGS`] in hex (checked by a unit test).
macro_rules! content_features {
    () => {
        "DLNA.ORG_OP=00;DLNA.ORG_CI=0;DLNA.ORG_FLAGS=01700000000000000000000000000000"
    };
}

/// The MIME type of every stream (and the `Content-Type` of its response).
pub const MIME_TYPE: &str = "video/mp2t";
/// The value of the `contentFeatures.dlna.org` header on stream responses.
pub const CONTENT_FEATURES: &str = content_features!();
/// The protocolInfo of every channel's `<res>` and of `GetProtocolInfo`.
pub const PROTOCOL_INFO: &str = concat!("http-get:*:video/mp2t:", content_features!());

/// Bytes of a SOAP request body read at most (the HTTP server refuses longer
/// bodies before calling; a real Browse request is under 1 KiB).
pub const BODY_BYTES_MAX: usize = 8 * 1024;

/// Bytes of one argument value kept (after unescaping): an ObjectID, a
/// BrowseFlag (`BrowseDirectChildren` is 20) or a number.
pub const ARGUMENT_BYTES_MAX: usize = 64;

/// Items a Browse lists at most: the channel table's production size. It is
/// a fixed value (not `limits::CHANNELS_MAX`, which is small in test builds)
/// so that the size test renders the largest real library.
pub const ITEMS_MAX: usize = 32;
const _: () = assert!(crate::limits::CHANNELS_MAX <= ITEMS_MAX);

/// The ID of the root container.
pub const ROOT_ID: &str = "0";
/// Items are `ch<index>`.
const ITEM_ID_PREFIX: &str = "ch";

/// An object ID as the request named it; empty means the root.
pub type ObjectRef = String<ARGUMENT_BYTES_MAX>;

const XML_DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n";
const ENVELOPE_START: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n\
<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>";
const ENVELOPE_END: &str = "</s:Body></s:Envelope>\r\n";

// ---------------------------------------------------------------------------
// Device description

/// What the device description says about this box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device<'a> {
    pub friendly_name: &'a str,
    /// The 36-character UUID text, without `uuid:`.
    pub uuid: &'a str,
    /// The daemon's version (`modelNumber`).
    pub version: &'a str,
    /// The status page, absolute (`http://192.168.1.2:8090/`).
    pub presentation_url: &'a str,
}

/// Renders the UPnP device description. It has no `URLBase`: the relative
/// service URLs resolve against the description's own URL.
pub fn render_description(w: &mut SliceWriter<'_>, device: &Device<'_>) -> fmt::Result {
    write!(
        w,
        "{XML_DECLARATION}<root xmlns=\"urn:schemas-upnp-org:device-1-0\" \
         xmlns:dlna=\"urn:schemas-dlna-org:device-1-0\">\
         <specVersion><major>1</major><minor>0</minor></specVersion><device>\
         <deviceType>{DEVICE_TYPE}</deviceType>\
         <friendlyName>{}</friendlyName>\
         <manufacturer>ringcast</manufacturer>\
         <modelDescription>Live TV relay</modelDescription>\
         <modelName>ringcast</modelName>\
         <modelNumber>{}</modelNumber>\
         <UDN>uuid:{}</UDN>\
         <dlna:X_DLNADOC>DMS-1.50</dlna:X_DLNADOC><serviceList>",
        Escaped(device.friendly_name),
        Escaped(device.version),
        Escaped(device.uuid),
    )?;
    for service in [Service::ContentDirectory, Service::ConnectionManager] {
        render_service_entry(w, service)?;
    }
    write!(
        w,
        "</serviceList><presentationURL>{}</presentationURL></device></root>\r\n",
        Escaped(device.presentation_url)
    )
}

fn render_service_entry(w: &mut SliceWriter<'_>, service: Service) -> fmt::Result {
    write!(
        w,
        "<service><serviceType>{}</serviceType>\
         <serviceId>urn:upnp-org:serviceId:{}</serviceId>\
         <SCPDURL>{}</SCPDURL><controlURL>{}</controlURL>\
         <eventSubURL>{}</eventSubURL></service>",
        service.service_type(),
        service.name(),
        service.scpd_path(),
        service.control_path(),
        service.event_path(),
    )
}

// ---------------------------------------------------------------------------
// Service descriptions (SCPD)

/// One argument of an action, as the SCPD lists it.
#[derive(Clone, Copy, Debug)]
struct ArgumentSpec {
    name: &'static str,
    output: bool,
    variable: &'static str,
}

const fn input(name: &'static str, variable: &'static str) -> ArgumentSpec {
    ArgumentSpec {
        name,
        output: false,
        variable,
    }
}

const fn output(name: &'static str, variable: &'static str) -> ArgumentSpec {
    ArgumentSpec {
        name,
        output: true,
        variable,
    }
}

#[derive(Clone, Copy, Debug)]
struct ActionSpec {
    name: &'static str,
    arguments: &'static [ArgumentSpec],
}

#[derive(Clone, Copy, Debug)]
struct VariableSpec {
    name: &'static str,
    data_type: &'static str,
    send_events: bool,
    allowed: &'static [&'static str],
}

const fn variable(name: &'static str, data_type: &'static str) -> VariableSpec {
    VariableSpec {
        name,
        data_type,
        send_events: false,
        allowed: &[],
    }
}

const fn evented(name: &'static str, data_type: &'static str) -> VariableSpec {
    VariableSpec {
        name,
        data_type,
        send_events: true,
        allowed: &[],
    }
}

const fn allowed(name: &'static str, values: &'static [&'static str]) -> VariableSpec {
    VariableSpec {
        name,
        data_type: "string",
        send_events: false,
        allowed: values,
    }
}

const BROWSE_FLAGS: [&str; 2] = ["BrowseMetadata", "BrowseDirectChildren"];

const CONTENT_DIRECTORY_ACTIONS: &[ActionSpec] = &[
    ActionSpec {
        name: "Browse",
        arguments: &[
            input("ObjectID", "A_ARG_TYPE_ObjectID"),
            input("BrowseFlag", "A_ARG_TYPE_BrowseFlag"),
            input("Filter", "A_ARG_TYPE_Filter"),
            input("StartingIndex", "A_ARG_TYPE_Index"),
            input("RequestedCount", "A_ARG_TYPE_Count"),
            input("SortCriteria", "A_ARG_TYPE_SortCriteria"),
            output("Result", "A_ARG_TYPE_Result"),
            output("NumberReturned", "A_ARG_TYPE_Count"),
            output("TotalMatches", "A_ARG_TYPE_Count"),
            output("UpdateID", "A_ARG_TYPE_UpdateID"),
        ],
    },
    ActionSpec {
        name: "GetSearchCapabilities",
        arguments: &[output("SearchCaps", "SearchCapabilities")],
    },
    ActionSpec {
        name: "GetSortCapabilities",
        arguments: &[output("SortCaps", "SortCapabilities")],
    },
    ActionSpec {
        name: "GetSystemUpdateID",
        arguments: &[output("Id", "SystemUpdateID")],
    },
    ActionSpec {
        name: "X_GetFeatureList",
        arguments: &[output("FeatureList", "A_ARG_TYPE_FeatureList")],
    },
];

const CONTENT_DIRECTORY_VARIABLES: &[VariableSpec] = &[
    variable("A_ARG_TYPE_ObjectID", "string"),
    variable("A_ARG_TYPE_Result", "string"),
    allowed("A_ARG_TYPE_BrowseFlag", &BROWSE_FLAGS),
    variable("A_ARG_TYPE_Filter", "string"),
    variable("A_ARG_TYPE_SortCriteria", "string"),
    variable("A_ARG_TYPE_Index", "ui4"),
    variable("A_ARG_TYPE_Count", "ui4"),
    variable("A_ARG_TYPE_UpdateID", "ui4"),
    variable("A_ARG_TYPE_FeatureList", "string"),
    variable("SearchCapabilities", "string"),
    variable("SortCapabilities", "string"),
    evented("SystemUpdateID", "ui4"),
];

const CONNECTION_MANAGER_ACTIONS: &[ActionSpec] = &[
    ActionSpec {
        name: "GetProtocolInfo",
        arguments: &[
            output("Source", "SourceProtocolInfo"),
            output("Sink", "SinkProtocolInfo"),
        ],
    },
    ActionSpec {
        name: "GetCurrentConnectionIDs",
        arguments: &[output("ConnectionIDs", "CurrentConnectionIDs")],
    },
    ActionSpec {
        name: "GetCurrentConnectionInfo",
        arguments: &[
            input("ConnectionID", "A_ARG_TYPE_ConnectionID"),
            output("RcsID", "A_ARG_TYPE_RcsID"),
            output("AVTransportID", "A_ARG_TYPE_AVTransportID"),
            output("ProtocolInfo", "A_ARG_TYPE_ProtocolInfo"),
            output("PeerConnectionManager", "A_ARG_TYPE_ConnectionManager"),
            output("PeerConnectionID", "A_ARG_TYPE_ConnectionID"),
            output("Direction", "A_ARG_TYPE_Direction"),
            output("Status", "A_ARG_TYPE_ConnectionStatus"),
        ],
    },
];

const CONNECTION_MANAGER_VARIABLES: &[VariableSpec] = &[
    evented("SourceProtocolInfo", "string"),
    evented("SinkProtocolInfo", "string"),
    evented("CurrentConnectionIDs", "string"),
    allowed(
        "A_ARG_TYPE_ConnectionStatus",
        &[
            "OK",
            "ContentFormatMismatch",
            "InsufficientBandwidth",
            "UnreliableChannel",
            "Unknown",
        ],
    ),
    variable("A_ARG_TYPE_ConnectionManager", "string"),
    allowed("A_ARG_TYPE_Direction", &["Input", "Output"]),
    variable("A_ARG_TYPE_ProtocolInfo", "string"),
    variable("A_ARG_TYPE_ConnectionID", "i4"),
    variable("A_ARG_TYPE_AVTransportID", "i4"),
    variable("A_ARG_TYPE_RcsID", "i4"),
];

/// Renders ContentDirectory:1's SCPD: the actions answered, nothing more.
pub fn render_content_directory_scpd(w: &mut SliceWriter<'_>) -> fmt::Result {
    render_scpd(w, CONTENT_DIRECTORY_ACTIONS, CONTENT_DIRECTORY_VARIABLES)
}

/// Renders ConnectionManager:1's SCPD (the required actions only).
pub fn render_connection_manager_scpd(w: &mut SliceWriter<'_>) -> fmt::Result {
    render_scpd(w, CONNECTION_MANAGER_ACTIONS, CONNECTION_MANAGER_VARIABLES)
}

fn render_scpd(
    w: &mut SliceWriter<'_>,
    actions: &[ActionSpec],
    variables: &[VariableSpec],
) -> fmt::Result {
    write!(
        w,
        "{XML_DECLARATION}<scpd xmlns=\"urn:schemas-upnp-org:service-1-0\">\
         <specVersion><major>1</major><minor>0</minor></specVersion><actionList>"
    )?;
    for action in actions {
        render_action_spec(w, action)?;
    }
    w.write_str("</actionList><serviceStateTable>")?;
    for variable in variables {
        render_variable_spec(w, variable)?;
    }
    w.write_str("</serviceStateTable></scpd>\r\n")
}

fn render_action_spec(w: &mut SliceWriter<'_>, action: &ActionSpec) -> fmt::Result {
    write!(w, "<action><name>{}</name><argumentList>", action.name)?;
    for argument in action.arguments {
        write!(
            w,
            "<argument><name>{}</name><direction>{}</direction>\
             <relatedStateVariable>{}</relatedStateVariable></argument>",
            argument.name,
            if argument.output { "out" } else { "in" },
            argument.variable
        )?;
    }
    w.write_str("</argumentList></action>")
}

fn render_variable_spec(w: &mut SliceWriter<'_>, variable: &VariableSpec) -> fmt::Result {
    write!(
        w,
        "<stateVariable sendEvents=\"{}\"><name>{}</name><dataType>{}</dataType>",
        if variable.send_events { "yes" } else { "no" },
        variable.name,
        variable.data_type
    )?;
    if !variable.allowed.is_empty() {
        w.write_str("<allowedValueList>")?;
        for value in variable.allowed {
            write!(w, "<allowedValue>{value}</allowedValue>")?;
        }
        w.write_str("</allowedValueList>")?;
    }
    w.write_str("</stateVariable>")
}

// ---------------------------------------------------------------------------
// Control requests

/// The two services of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    ContentDirectory,
    ConnectionManager,
}

impl Service {
    /// The service's name in its type and ID.
    pub const fn name(self) -> &'static str {
        match self {
            Service::ContentDirectory => "ContentDirectory",
            Service::ConnectionManager => "ConnectionManager",
        }
    }

    pub const fn service_type(self) -> &'static str {
        match self {
            Service::ContentDirectory => CONTENT_DIRECTORY_TYPE,
            Service::ConnectionManager => CONNECTION_MANAGER_TYPE,
        }
    }

    pub const fn scpd_path(self) -> &'static str {
        match self {
            Service::ContentDirectory => CONTENT_DIRECTORY_SCPD_PATH,
            Service::ConnectionManager => CONNECTION_MANAGER_SCPD_PATH,
        }
    }

    pub const fn control_path(self) -> &'static str {
        match self {
            Service::ContentDirectory => CONTENT_DIRECTORY_CONTROL_PATH,
            Service::ConnectionManager => CONNECTION_MANAGER_CONTROL_PATH,
        }
    }

    pub const fn event_path(self) -> &'static str {
        match self {
            Service::ContentDirectory => CONTENT_DIRECTORY_EVENT_PATH,
            Service::ConnectionManager => CONNECTION_MANAGER_EVENT_PATH,
        }
    }
}

/// Browse's `BrowseFlag`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrowseFlag {
    /// The object itself.
    Metadata,
    /// The children of a container.
    DirectChildren,
}

impl BrowseFlag {
    pub const fn as_str(self) -> &'static str {
        match self {
            BrowseFlag::Metadata => BROWSE_FLAGS[0],
            BrowseFlag::DirectChildren => BROWSE_FLAGS[1],
        }
    }
}

/// A control request we answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    // ContentDirectory
    Browse {
        /// Never empty: an empty ObjectID is read as [`ROOT_ID`].
        object_id: ObjectRef,
        flag: BrowseFlag,
        starting_index: u32,
        /// 0 means all.
        requested_count: u32,
    },
    GetSearchCapabilities,
    GetSortCapabilities,
    GetSystemUpdateID,
    /// Samsung's `X_GetFeatureList`.
    XGetFeatureList,
    // ConnectionManager
    GetProtocolInfo,
    GetCurrentConnectionIDs,
    GetCurrentConnectionInfo {
        connection_id: i32,
    },
}

impl Action {
    /// The action's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Browse { .. } => "Browse",
            Action::GetSearchCapabilities => "GetSearchCapabilities",
            Action::GetSortCapabilities => "GetSortCapabilities",
            Action::GetSystemUpdateID => "GetSystemUpdateID",
            Action::XGetFeatureList => "X_GetFeatureList",
            Action::GetProtocolInfo => "GetProtocolInfo",
            Action::GetCurrentConnectionIDs => "GetCurrentConnectionIDs",
            Action::GetCurrentConnectionInfo { .. } => "GetCurrentConnectionInfo",
        }
    }

    /// The service the action belongs to.
    pub fn service(&self) -> Service {
        match self {
            Action::GetProtocolInfo
            | Action::GetCurrentConnectionIDs
            | Action::GetCurrentConnectionInfo { .. } => Service::ConnectionManager,
            _ => Service::ContentDirectory,
        }
    }
}

/// A UPnP error answered as a SOAP fault (HTTP 500).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoapFault {
    /// 401: no such action at this service (or an unreadable `SOAPACTION`).
    InvalidAction,
    /// 402: a missing, malformed or out of range argument, or a body over
    /// [`BODY_BYTES_MAX`].
    InvalidArgs,
    /// 501: the answer did not fit the response buffer.
    ActionFailed,
    /// 701: the ObjectID names nothing (also one longer than
    /// [`ARGUMENT_BYTES_MAX`], which cannot name anything).
    NoSuchObject,
    /// 706 (ConnectionManager): no connection with that ID; only `0` exists.
    InvalidConnectionReference,
    /// 710: not answered by Browse (children of an item are an empty list),
    /// kept for callers.
    NoSuchContainer,
    /// 720: the request cannot be processed.
    CannotProcess,
}

impl SoapFault {
    /// The UPnP `errorCode`.
    pub const fn code(self) -> u16 {
        match self {
            SoapFault::InvalidAction => 401,
            SoapFault::InvalidArgs => 402,
            SoapFault::ActionFailed => 501,
            SoapFault::NoSuchObject => 701,
            SoapFault::InvalidConnectionReference => 706,
            SoapFault::NoSuchContainer => 710,
            SoapFault::CannotProcess => 720,
        }
    }

    /// The `errorDescription`, as the service templates word it.
    pub const fn description(self) -> &'static str {
        match self {
            SoapFault::InvalidAction => "Invalid Action",
            SoapFault::InvalidArgs => "Invalid Args",
            SoapFault::ActionFailed => "Action Failed",
            SoapFault::NoSuchObject => "No such object",
            SoapFault::InvalidConnectionReference => "Invalid connection reference",
            SoapFault::NoSuchContainer => "No such container",
            SoapFault::CannotProcess => "Cannot process the request",
        }
    }
}

/// A rendering that ran out of buffer is an action that failed.
impl From<fmt::Error> for SoapFault {
    fn from(_: fmt::Error) -> Self {
        SoapFault::ActionFailed
    }
}

/// Reads a control request to `service` from its `SOAPACTION` header value
/// (`"<service type>#<action>"`, quotes optional) and body.
///
/// The action is named by the header, or, without one (or with an empty
/// one), by the first element in `Body`. A header naming another service
/// type, a name without `#` or an action the service does not have is
/// [`SoapFault::InvalidAction`]. Arguments are the action element's
/// children, by local name, unescaped and trimmed; unknown ones (`Filter`,
/// `SortCriteria`) are ignored. A missing `ObjectID` or an empty one is the
/// root, a missing `StartingIndex` or `RequestedCount` is 0; a missing
/// `BrowseFlag` or `ConnectionID`, a number that does not parse or an
/// unknown flag is [`SoapFault::InvalidArgs`], as is XML that breaks before
/// the action element ends.
pub fn parse_request(
    service: Service,
    soap_action_header: Option<&[u8]>,
    body: &[u8],
) -> Result<Action, SoapFault> {
    if body.len() > BODY_BYTES_MAX {
        return Err(SoapFault::InvalidArgs);
    }
    let header_name = match soap_action_header {
        Some(header) => header_action_name(service, header)?,
        None => None,
    };
    let request = Request::scan(body);
    let name = header_name
        .or(request.action)
        .ok_or(SoapFault::InvalidAction)?;
    let action = action_named(service, name, &request)?;
    if request.broken {
        return Err(SoapFault::InvalidArgs);
    }
    Ok(action)
}

/// The action name of a `SOAPACTION` value, or `None` when it is empty.
fn header_action_name(service: Service, header: &[u8]) -> Result<Option<&[u8]>, SoapFault> {
    let value = xml::trim(header);
    let value = value
        .strip_prefix(b"\"")
        .and_then(|inner| inner.strip_suffix(b"\""))
        .unwrap_or(value);
    let value = xml::trim(value);
    if value.is_empty() {
        return Ok(None);
    }
    let hash = value
        .iter()
        .rposition(|&byte| byte == b'#')
        .ok_or(SoapFault::InvalidAction)?;
    let (service_type, name) = (&value[..hash], &value[hash + 1..]);
    if service_type != service.service_type().as_bytes() || name.is_empty() {
        return Err(SoapFault::InvalidAction);
    }
    Ok(Some(name))
}

/// The action `name` of `service` with its arguments from `request`.
fn action_named(service: Service, name: &[u8], request: &Request) -> Result<Action, SoapFault> {
    use Service::{ConnectionManager, ContentDirectory};
    Ok(match (service, name) {
        (ContentDirectory, b"Browse") => browse(request)?,
        (ContentDirectory, b"GetSearchCapabilities") => Action::GetSearchCapabilities,
        (ContentDirectory, b"GetSortCapabilities") => Action::GetSortCapabilities,
        (ContentDirectory, b"GetSystemUpdateID") => Action::GetSystemUpdateID,
        (ContentDirectory, b"X_GetFeatureList") => Action::XGetFeatureList,
        (ConnectionManager, b"GetProtocolInfo") => Action::GetProtocolInfo,
        (ConnectionManager, b"GetCurrentConnectionIDs") => Action::GetCurrentConnectionIDs,
        (ConnectionManager, b"GetCurrentConnectionInfo") => Action::GetCurrentConnectionInfo {
            connection_id: request
                .number(Argument::ConnectionId)?
                .ok_or(SoapFault::InvalidArgs)?,
        },
        _ => return Err(SoapFault::InvalidAction),
    })
}

fn browse(request: &Request) -> Result<Action, SoapFault> {
    let object_id = match request.value(Argument::ObjectId) {
        Value::Missing | Value::Text("") => ROOT_ID,
        Value::Text(text) => text,
        Value::Unreadable => return Err(SoapFault::NoSuchObject),
    };
    let mut object_ref = ObjectRef::new();
    object_ref
        .push_str(object_id)
        .map_err(|_| SoapFault::NoSuchObject)?;
    let flag = match request.value(Argument::BrowseFlag) {
        Value::Text(text) if text == BrowseFlag::Metadata.as_str() => BrowseFlag::Metadata,
        Value::Text(text) if text == BrowseFlag::DirectChildren.as_str() => {
            BrowseFlag::DirectChildren
        }
        _ => return Err(SoapFault::InvalidArgs),
    };
    Ok(Action::Browse {
        object_id: object_ref,
        flag,
        starting_index: request.number(Argument::StartingIndex)?.unwrap_or(0),
        requested_count: request.number(Argument::RequestedCount)?.unwrap_or(0),
    })
}

/// The input arguments read from requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Argument {
    ObjectId,
    BrowseFlag,
    StartingIndex,
    RequestedCount,
    ConnectionId,
}

const ARGUMENTS: [(&[u8], Argument); 5] = [
    (b"ObjectID", Argument::ObjectId),
    (b"BrowseFlag", Argument::BrowseFlag),
    (b"StartingIndex", Argument::StartingIndex),
    (b"RequestedCount", Argument::RequestedCount),
    (b"ConnectionID", Argument::ConnectionId),
];

/// One argument's value as found.
enum Value<'a> {
    Missing,
    /// Longer than [`ARGUMENT_BYTES_MAX`] or not UTF-8.
    Unreadable,
    Text(&'a str),
}

/// What the scan of a request body found.
struct Request<'a> {
    /// The local name of the first element in `Body`.
    action: Option<&'a [u8]>,
    /// The XML broke (or a scan limit hit) before the action element ended.
    broken: bool,
    values: [Option<TextBuffer<ARGUMENT_BYTES_MAX>>; ARGUMENTS.len()],
}

impl<'a> Request<'a> {
    fn scan(body: &'a [u8]) -> Self {
        let mut walk = Walk {
            request: Request {
                action: None,
                broken: false,
                values: Default::default(),
            },
            depth: 0,
            body_depth: None,
            action_depth: 0,
            field: None,
            done: false,
        };
        let mut scanner = Scanner::new(body);
        while !walk.done {
            let Some(event) = scanner.next() else { break };
            walk.handle(event, scanner.last_text_is_cdata());
        }
        walk.request.broken = scanner.failed() && !walk.done;
        walk.request
    }

    fn value(&self, argument: Argument) -> Value<'_> {
        match &self.values[argument as usize] {
            None => Value::Missing,
            Some(text) => text.trimmed().map_or(Value::Unreadable, Value::Text),
        }
    }

    /// A number argument: `None` if missing, an error if it does not parse.
    fn number<T: core::str::FromStr>(&self, argument: Argument) -> Result<Option<T>, SoapFault> {
        match self.value(argument) {
            Value::Missing => Ok(None),
            Value::Text(text) => text.parse().map(Some).map_err(|_| SoapFault::InvalidArgs),
            Value::Unreadable => Err(SoapFault::InvalidArgs),
        }
    }
}

/// The scan's position in the envelope.
struct Walk<'a> {
    request: Request<'a>,
    /// Elements open (the scanner bounds this).
    depth: usize,
    /// Depth of the `Body` element once opened.
    body_depth: Option<usize>,
    /// Depth of the action element once opened.
    action_depth: usize,
    /// The argument whose text is being collected.
    field: Option<Argument>,
    /// The action element ended: the rest of the body is not read.
    done: bool,
}

impl<'a> Walk<'a> {
    fn handle(&mut self, event: Event<'a>, cdata: bool) {
        match event {
            Event::Start(name) => {
                self.depth += 1;
                self.start(name);
            }
            Event::End(_) => {
                if self.request.action.is_some() {
                    if self.depth == self.action_depth + 1 {
                        self.field = None;
                    } else if self.depth == self.action_depth {
                        self.done = true;
                    }
                } else if self.body_depth == Some(self.depth) {
                    // `Body` ended empty: nothing after it is the action.
                    self.done = true;
                }
                self.depth = self.depth.saturating_sub(1);
            }
            Event::Text(raw) => {
                let Some(field) = self.field else { return };
                if self.depth == self.action_depth + 1 {
                    if let Some(text) = &mut self.request.values[field as usize] {
                        text.push(raw, cdata);
                    }
                }
            }
        }
    }

    fn start(&mut self, name: &'a [u8]) {
        let Some(body_depth) = self.body_depth else {
            if name == b"Body" {
                self.body_depth = Some(self.depth);
            }
            return;
        };
        if self.request.action.is_none() {
            if self.depth == body_depth + 1 {
                self.request.action = Some(name);
                self.action_depth = self.depth;
            }
            return;
        }
        if self.depth == self.action_depth + 1 {
            self.field = ARGUMENTS
                .iter()
                .find(|(argument_name, _)| *argument_name == name)
                .map(|&(_, argument)| argument);
            if let Some(field) = self.field {
                // A repeated argument: the last one counts.
                self.request.values[field as usize] = Some(TextBuffer::new());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Answers

/// One channel as the library lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item<'a> {
    /// The channel's stable index: the item's ID is `ch<id_index>`.
    pub id_index: usize,
    /// The channel name.
    pub title: &'a str,
    /// The stream's absolute `http://` URL.
    pub url: &'a str,
}

/// The media library, supplied without allocating: `item(i)` for `i` in
/// `0..count` (at most [`ITEMS_MAX`] are asked for) gives the channels in
/// the order they are listed; a `None` is skipped.
pub struct Library<'a, I: Fn(usize) -> Option<Item<'a>>> {
    pub count: usize,
    pub item: I,
    /// ContentDirectory's `SystemUpdateID` (and every object's update ID).
    pub system_update_id: u32,
    /// The root container's title.
    pub friendly_name: &'a str,
}

impl<'a, I: Fn(usize) -> Option<Item<'a>>> Library<'a, I> {
    fn items(&self) -> impl Iterator<Item = Item<'a>> + '_ {
        (0..self.count.min(ITEMS_MAX)).filter_map(&self.item)
    }

    fn total(&self) -> usize {
        self.items().count()
    }

    fn find(&self, id_index: usize) -> Option<Item<'a>> {
        self.items().find(|item| item.id_index == id_index)
    }
}

/// A library over a slice of items (built on the caller's stack).
pub fn slice_library<'a>(
    items: &'a [Item<'a>],
    system_update_id: u32,
    friendly_name: &'a str,
) -> Library<'a, impl Fn(usize) -> Option<Item<'a>>> {
    Library {
        count: items.len(),
        item: move |index| items.get(index).copied(),
        system_update_id,
        friendly_name,
    }
}

/// The object a Browse names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Object<'a> {
    Root,
    Item(Item<'a>),
}

/// What one Browse answers: which objects, and its counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listing<'a> {
    /// One object (BrowseMetadata).
    Metadata(Object<'a>),
    /// Children of the root: `returned` items from `start`, of `total`.
    Children {
        start: usize,
        returned: usize,
        total: usize,
    },
    /// Children of an item: none. Answered as an empty list rather than
    /// fault 710, which ContentDirectory:1 does not list for Browse.
    NoChildren,
}

impl Listing<'_> {
    fn returned(&self) -> usize {
        match self {
            Listing::Metadata(_) => 1,
            Listing::Children { returned, .. } => *returned,
            Listing::NoChildren => 0,
        }
    }

    fn total(&self) -> usize {
        match self {
            Listing::Metadata(_) => 1,
            Listing::Children { total, .. } => *total,
            Listing::NoChildren => 0,
        }
    }
}

/// The object an ID names.
fn find_object<'a, I>(library: &Library<'a, I>, object_id: &str) -> Result<Object<'a>, SoapFault>
where
    I: Fn(usize) -> Option<Item<'a>>,
{
    if object_id == ROOT_ID || object_id.is_empty() {
        return Ok(Object::Root);
    }
    parse_item_id(object_id)
        .and_then(|id_index| library.find(id_index))
        .map(Object::Item)
        .ok_or(SoapFault::NoSuchObject)
}

/// `ch<index>` in its canonical form (no sign, no leading zeros).
fn parse_item_id(object_id: &str) -> Option<usize> {
    let digits = object_id.strip_prefix(ITEM_ID_PREFIX)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    digits.parse().ok()
}

fn plan_browse<'a, I>(
    library: &Library<'a, I>,
    object_id: &str,
    flag: BrowseFlag,
    starting_index: u32,
    requested_count: u32,
) -> Result<Listing<'a>, SoapFault>
where
    I: Fn(usize) -> Option<Item<'a>>,
{
    let object = find_object(library, object_id)?;
    Ok(match (flag, object) {
        (BrowseFlag::Metadata, object) => Listing::Metadata(object),
        (BrowseFlag::DirectChildren, Object::Item(_)) => Listing::NoChildren,
        (BrowseFlag::DirectChildren, Object::Root) => {
            let total = library.total();
            let start = usize::try_from(starting_index).map_or(total, |start| start.min(total));
            let left = total - start;
            let returned = match usize::try_from(requested_count) {
                Ok(0) => left,
                Ok(count) => count.min(left),
                Err(_) => left,
            };
            Listing::Children {
                start,
                returned,
                total,
            }
        }
    })
}

/// Renders the whole SOAP envelope answering `action` (HTTP 200, body of
/// type `text/xml; charset="utf-8"`).
///
/// A fault found before anything is written (an unknown object, a bad
/// connection ID) leaves `w` untouched; [`SoapFault::ActionFailed`] means
/// the answer did not fit, and `w` then holds part of it: clear it and
/// [`render_fault`] instead ([`render_control`] does all that).
pub fn render_response<'a, I>(
    w: &mut SliceWriter<'_>,
    action: &Action,
    library: &Library<'a, I>,
) -> Result<(), SoapFault>
where
    I: Fn(usize) -> Option<Item<'a>>,
{
    let listing = match action {
        Action::Browse {
            object_id,
            flag,
            starting_index,
            requested_count,
        } => Some(plan_browse(
            library,
            object_id,
            *flag,
            *starting_index,
            *requested_count,
        )?),
        Action::GetCurrentConnectionInfo { connection_id } if *connection_id != 0 => {
            return Err(SoapFault::InvalidConnectionReference)
        }
        _ => None,
    };
    let name = action.name();
    write!(
        w,
        "{ENVELOPE_START}<u:{name}Response xmlns:u=\"{}\">",
        action.service().service_type()
    )?;
    match listing {
        Some(listing) => render_browse_outputs(w, &listing, library)?,
        None => render_outputs(w, action, library.system_update_id)?,
    }
    write!(w, "</u:{name}Response>{ENVELOPE_END}")?;
    Ok(())
}

/// The output arguments of every action but Browse.
fn render_outputs(w: &mut SliceWriter<'_>, action: &Action, system_update_id: u32) -> fmt::Result {
    match action {
        Action::Browse { .. } => Ok(()),
        Action::GetSearchCapabilities => w.write_str("<SearchCaps></SearchCaps>"),
        Action::GetSortCapabilities => w.write_str("<SortCaps></SortCaps>"),
        Action::GetSystemUpdateID => write!(w, "<Id>{system_update_id}</Id>"),
        Action::XGetFeatureList => {
            w.write_str("<FeatureList>")?;
            render_feature_list(&mut TextEscaper(w))?;
            w.write_str("</FeatureList>")
        }
        Action::GetProtocolInfo => {
            write!(
                w,
                "<Source>{}</Source><Sink></Sink>",
                Escaped(PROTOCOL_INFO)
            )
        }
        Action::GetCurrentConnectionIDs => w.write_str("<ConnectionIDs>0</ConnectionIDs>"),
        Action::GetCurrentConnectionInfo { .. } => w.write_str(
            "<RcsID>-1</RcsID><AVTransportID>-1</AVTransportID><ProtocolInfo></ProtocolInfo>\
             <PeerConnectionManager></PeerConnectionManager><PeerConnectionID>-1</PeerConnectionID>\
             <Direction>Output</Direction><Status>OK</Status>",
        ),
    }
}

/// Samsung's feature list: the video items are found under the root.
fn render_feature_list(w: &mut impl Write) -> fmt::Result {
    w.write_str(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <Features xmlns=\"urn:schemas-upnp-org:av:avs\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xsi:schemaLocation=\"urn:schemas-upnp-org:av:avs http://www.upnp.org/schemas/av/avs.xsd\">\
         <Feature name=\"samsung.com_BASICVIEW\" version=\"1\">\
         <container id=\"0\" type=\"object.item.videoItem\"/></Feature></Features>",
    )
}

/// Result, NumberReturned, TotalMatches and UpdateID, in that order.
fn render_browse_outputs<'a, I>(
    w: &mut SliceWriter<'_>,
    listing: &Listing<'a>,
    library: &Library<'a, I>,
) -> fmt::Result
where
    I: Fn(usize) -> Option<Item<'a>>,
{
    w.write_str("<Result>")?;
    render_didl(&mut TextEscaper(w), listing, library)?;
    write!(
        w,
        "</Result><NumberReturned>{}</NumberReturned><TotalMatches>{}</TotalMatches>\
         <UpdateID>{}</UpdateID>",
        listing.returned(),
        listing.total(),
        library.system_update_id
    )
}

const DIDL_START: &str = "<DIDL-Lite xmlns=\"urn:schemas-upnp-org:metadata-1-0/DIDL-Lite/\" \
xmlns:dc=\"http://purl.org/dc/elements/1.1/\" \
xmlns:upnp=\"urn:schemas-upnp-org:metadata-1-0/upnp/\">";
const DIDL_END: &str = "</DIDL-Lite>";

/// The DIDL-Lite document of a listing, unescaped (callers wrap `w`).
fn render_didl<'a, I>(
    w: &mut impl Write,
    listing: &Listing<'a>,
    library: &Library<'a, I>,
) -> fmt::Result
where
    I: Fn(usize) -> Option<Item<'a>>,
{
    w.write_str(DIDL_START)?;
    match *listing {
        Listing::Metadata(Object::Root) => {
            render_root_container(w, library.friendly_name, library.total())?
        }
        Listing::Metadata(Object::Item(item)) => render_item(w, &item)?,
        Listing::Children {
            start, returned, ..
        } => {
            for item in library.items().skip(start).take(returned) {
                render_item(w, &item)?;
            }
        }
        Listing::NoChildren => {}
    }
    w.write_str(DIDL_END)
}

fn render_root_container(w: &mut impl Write, title: &str, child_count: usize) -> fmt::Result {
    // storageFolder requires upnp:storageUsed; -1 is "unknown".
    write!(
        w,
        "<container id=\"{ROOT_ID}\" parentID=\"-1\" restricted=\"1\" searchable=\"0\" \
         childCount=\"{child_count}\"><dc:title>{}</dc:title>\
         <upnp:class>object.container.storageFolder</upnp:class>\
         <upnp:storageUsed>-1</upnp:storageUsed></container>",
        Escaped(title)
    )
}

fn render_item(w: &mut impl Write, item: &Item<'_>) -> fmt::Result {
    write!(
        w,
        "<item id=\"{ITEM_ID_PREFIX}{}\" parentID=\"{ROOT_ID}\" restricted=\"1\">\
         <dc:title>{}</dc:title><upnp:class>object.item.videoItem</upnp:class>\
         <res protocolInfo=\"{PROTOCOL_INFO}\">{}</res></item>",
        item.id_index,
        Escaped(item.title),
        Escaped(item.url)
    )
}

/// Renders the SOAP fault envelope of `fault` (HTTP 500).
pub fn render_fault(w: &mut SliceWriter<'_>, fault: SoapFault) -> fmt::Result {
    write!(
        w,
        "{ENVELOPE_START}<s:Fault><faultcode>s:Client</faultcode>\
         <faultstring>UPnPError</faultstring><detail>\
         <UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\">\
         <errorCode>{}</errorCode><errorDescription>{}</errorDescription>\
         </UPnPError></detail></s:Fault>{ENVELOPE_END}",
        fault.code(),
        fault.description()
    )
}

/// HTTP status of a control answer.
pub const STATUS_OK: u16 = 200;
/// HTTP status of a SOAP fault.
pub const STATUS_FAULT: u16 = 500;

/// Reads a control request and renders its whole answer into `w`, which
/// must start empty (a fault clears it): the answer's envelope with
/// [`STATUS_OK`], or a fault's with [`STATUS_FAULT`]. `Err(Full)` only if
/// not even a fault fits.
pub fn render_control<'a, I>(
    w: &mut SliceWriter<'_>,
    service: Service,
    soap_action_header: Option<&[u8]>,
    body: &[u8],
    library: &Library<'a, I>,
) -> Result<u16, Full>
where
    I: Fn(usize) -> Option<Item<'a>>,
{
    assert!(w.is_empty(), "render_control needs an empty writer");
    let result = parse_request(service, soap_action_header, body)
        .and_then(|action| render_response(w, &action, library));
    match result {
        Ok(()) => Ok(STATUS_OK),
        Err(fault) => {
            w.clear();
            render_fault(w, fault)?;
            Ok(STATUS_FAULT)
        }
    }
}

// ---------------------------------------------------------------------------
// Escaping

/// Text escaped for XML content and attribute values; characters XML 1.0
/// does not allow even escaped (most C0 controls, U+FFFE, U+FFFF) become
/// spaces.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0)
    }
}

fn write_escaped(w: &mut impl Write, text: &str) -> fmt::Result {
    // Runs of plain characters are written in one call.
    let mut plain_start = 0;
    for (index, character) in text.char_indices() {
        let replacement = match character {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\t' | '\n' | '\r' => continue,
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => " ",
            _ => continue,
        };
        w.write_str(&text[plain_start..index])?;
        w.write_str(replacement)?;
        plain_start = index + character.len_utf8();
    }
    w.write_str(&text[plain_start..])
}

/// Escapes everything written through it: a document nested as the text of
/// an element (DIDL-Lite in `<Result>`).
struct TextEscaper<'w, 'b>(&'w mut SliceWriter<'b>);

impl Write for TextEscaper<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_escaped(self.0, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::format;
    use std::string::String as StdString;
    use std::vec::Vec;

    const BUFFER_BYTES: usize = crate::limits::RESPONSE_BYTES_MAX;

    fn render(f: impl FnOnce(&mut SliceWriter<'_>) -> fmt::Result) -> StdString {
        let mut buffer = std::vec![0u8; BUFFER_BYTES];
        let mut w = SliceWriter::new(&mut buffer);
        f(&mut w).unwrap();
        StdString::from_utf8(w.written().to_vec()).unwrap()
    }

    fn device() -> Device<'static> {
        Device {
            friendly_name: "ringcast on <box> & \"tv\"",
            uuid: "0f1e2d3c-4b5a-4968-8776-655443322110",
            version: "0.1.0",
            presentation_url: "http://192.168.1.2:8090/",
        }
    }

    const ITEMS: [Item<'static>; 3] = [
        Item {
            id_index: 0,
            title: "news",
            url: "http://192.168.1.2:8090/channel/news.ts",
        },
        Item {
            id_index: 2,
            title: "a<b>&c",
            url: "http://192.168.1.2:8090/channel/x.ts?a=1&b=2",
        },
        Item {
            id_index: 5,
            title: "sport",
            url: "http://192.168.1.2:8090/channel/sport.ts",
        },
    ];

    fn cd(header_action: &str, body: &str) -> Result<Action, SoapFault> {
        let header = format!("\"{CONTENT_DIRECTORY_TYPE}#{header_action}\"");
        parse_request(
            Service::ContentDirectory,
            Some(header.as_bytes()),
            body.as_bytes(),
        )
    }

    fn envelope(inner: &str) -> StdString {
        format!(
            "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>{inner}</s:Body></s:Envelope>"
        )
    }

    fn browse_body(object_id: &str, flag: &str, start: &str, count: &str) -> StdString {
        envelope(&format!(
            "<u:Browse xmlns:u=\"{CONTENT_DIRECTORY_TYPE}\"><ObjectID>{object_id}</ObjectID>\
             <BrowseFlag>{flag}</BrowseFlag><Filter>*</Filter><StartingIndex>{start}</StartingIndex>\
             <RequestedCount>{count}</RequestedCount><SortCriteria></SortCriteria></u:Browse>"
        ))
    }

    fn browse(object_id: &str, flag: BrowseFlag, start: u32, count: u32) -> Action {
        Action::Browse {
            object_id: ObjectRef::try_from(object_id).unwrap(),
            flag,
            starting_index: start,
            requested_count: count,
        }
    }

    /// The unescaped text of the first element named `name` in `document`.
    fn element_text(document: &str, name: &str) -> Option<StdString> {
        let scanner = Scanner::new(document.as_bytes());
        let mut inside = false;
        let mut text = Vec::new();
        for event in scanner {
            match event {
                Event::Start(local) if local == name.as_bytes() => inside = true,
                Event::End(local) if inside && local == name.as_bytes() => {
                    let mut out = std::vec![0u8; text.len()];
                    let length = xml::unescape(&text, &mut out)?;
                    out.truncate(length);
                    return StdString::from_utf8(out).ok();
                }
                Event::Text(raw) if inside => text.extend_from_slice(raw),
                _ => {}
            }
        }
        None
    }

    /// The sequence of element local names, checking nesting as it goes.
    fn elements(document: &str) -> Vec<StdString> {
        let mut scanner = Scanner::new(document.as_bytes());
        let mut open: Vec<&[u8]> = Vec::new();
        let mut names = Vec::new();
        for event in scanner.by_ref() {
            match event {
                Event::Start(name) => {
                    open.push(name);
                    names.push(StdString::from_utf8(name.to_vec()).unwrap());
                }
                Event::End(name) => assert_eq!(open.pop(), Some(name), "{document}"),
                Event::Text(_) => {}
            }
        }
        assert!(!scanner.failed(), "{document}");
        assert!(open.is_empty(), "{document}");
        names
    }

    fn respond(action: &Action, items: &[Item<'_>]) -> Result<StdString, SoapFault> {
        let library = slice_library(items, 7, "Living <room>");
        let mut buffer = std::vec![0u8; BUFFER_BYTES];
        let mut w = SliceWriter::new(&mut buffer);
        render_response(&mut w, action, &library)?;
        let text = StdString::from_utf8(w.written().to_vec()).unwrap();
        elements(&text);
        Ok(text)
    }

    #[test]
    fn protocol_info_is_the_mime_type_and_the_flags() {
        assert_eq!(
            PROTOCOL_INFO,
            format!("http-get:*:{MIME_TYPE}:{CONTENT_FEATURES}")
        );
        let flags = format!("DLNA.ORG_FLAGS={DLNA_FLAGS:08x}{}", "0".repeat(24));
        assert!(CONTENT_FEATURES.ends_with(&flags), "{flags}");
        assert!(CONTENT_FEATURES.starts_with("DLNA.ORG_OP=00;DLNA.ORG_CI=0;"));
    }

    #[test]
    fn description_names_the_device_and_services() {
        let text = render(|w| render_description(w, &device()));
        elements(&text);
        assert_eq!(
            element_text(&text, "deviceType").as_deref(),
            Some(DEVICE_TYPE)
        );
        assert_eq!(
            element_text(&text, "friendlyName").as_deref(),
            Some("ringcast on <box> & \"tv\"")
        );
        assert!(text.contains("<friendlyName>ringcast on &lt;box&gt; &amp; &quot;tv&quot;<"));
        assert_eq!(
            element_text(&text, "UDN").as_deref(),
            Some("uuid:0f1e2d3c-4b5a-4968-8776-655443322110")
        );
        assert!(text.contains("<dlna:X_DLNADOC>DMS-1.50</dlna:X_DLNADOC>"));
        assert!(text.contains("xmlns:dlna=\"urn:schemas-dlna-org:device-1-0\""));
        for path in [
            CONTENT_DIRECTORY_SCPD_PATH,
            CONTENT_DIRECTORY_CONTROL_PATH,
            CONTENT_DIRECTORY_EVENT_PATH,
            CONNECTION_MANAGER_SCPD_PATH,
            CONNECTION_MANAGER_CONTROL_PATH,
            CONNECTION_MANAGER_EVENT_PATH,
        ] {
            assert!(text.contains(&format!(">{path}<")), "{path}");
        }
        assert!(text.contains("<serviceId>urn:upnp-org:serviceId:ContentDirectory</serviceId>"));
        assert!(text.contains("<serviceId>urn:upnp-org:serviceId:ConnectionManager</serviceId>"));
        assert!(!text.contains("URLBase"));
        let mut small = [0u8; 256];
        assert!(render_description(&mut SliceWriter::new(&mut small), &device()).is_err());
    }

    #[test]
    fn scpd_arguments_name_existing_variables() {
        for (actions, variables) in [
            (CONTENT_DIRECTORY_ACTIONS, CONTENT_DIRECTORY_VARIABLES),
            (CONNECTION_MANAGER_ACTIONS, CONNECTION_MANAGER_VARIABLES),
        ] {
            for action in actions {
                for argument in action.arguments {
                    assert!(
                        variables.iter().any(|v| v.name == argument.variable),
                        "{}: {}",
                        action.name,
                        argument.variable
                    );
                }
            }
            for variable in variables {
                let used = actions
                    .iter()
                    .flat_map(|action| action.arguments)
                    .any(|argument| argument.variable == variable.name);
                assert!(used, "{} is not used", variable.name);
            }
        }
    }

    #[test]
    fn scpds_list_the_actions_answered() {
        let text = render(render_content_directory_scpd);
        elements(&text);
        for name in [
            "Browse",
            "GetSearchCapabilities",
            "GetSortCapabilities",
            "GetSystemUpdateID",
            "X_GetFeatureList",
        ] {
            assert!(
                text.contains(&format!("<action><name>{name}</name>")),
                "{name}"
            );
        }
        assert!(text.contains(
            "<stateVariable sendEvents=\"yes\"><name>SystemUpdateID</name><dataType>ui4</dataType>"
        ));
        assert!(text.contains(
            "<allowedValueList><allowedValue>BrowseMetadata</allowedValue>\
             <allowedValue>BrowseDirectChildren</allowedValue></allowedValueList>"
        ));
        let text = render(render_connection_manager_scpd);
        elements(&text);
        for name in [
            "GetProtocolInfo",
            "GetCurrentConnectionIDs",
            "GetCurrentConnectionInfo",
        ] {
            assert!(
                text.contains(&format!("<action><name>{name}</name>")),
                "{name}"
            );
        }
        assert!(text.contains("<name>A_ARG_TYPE_ConnectionID</name><dataType>i4</dataType>"));
    }

    #[test]
    fn reads_browse_with_header_or_from_the_body() {
        let body = browse_body("0", "BrowseDirectChildren", "3", "10");
        let expected = browse("0", BrowseFlag::DirectChildren, 3, 10);
        assert_eq!(cd("Browse", &body), Ok(expected.clone()));
        let header_forms = [
            format!("{CONTENT_DIRECTORY_TYPE}#Browse"),
            format!("  \"{CONTENT_DIRECTORY_TYPE}#Browse\" "),
            StdString::from("\"\""),
        ];
        for header in &header_forms {
            let read = parse_request(
                Service::ContentDirectory,
                Some(header.as_bytes()),
                body.as_bytes(),
            );
            assert_eq!(read, Ok(expected.clone()), "{header}");
        }
        let read = parse_request(Service::ContentDirectory, None, body.as_bytes());
        assert_eq!(read, Ok(expected));
    }

    #[test]
    fn reads_arguments_by_local_name_unescaped() {
        let body = envelope(
            "<m:Browse xmlns:m=\"x\"><m:ObjectID> ch&#49;0 </m:ObjectID>\
             <m:BrowseFlag><![CDATA[BrowseMetadata]]></m:BrowseFlag>\
             <m:StartingIndex>0</m:StartingIndex><m:RequestedCount>0</m:RequestedCount></m:Browse>",
        );
        assert_eq!(
            cd("Browse", &body),
            Ok(browse("ch10", BrowseFlag::Metadata, 0, 0))
        );
        // Empty and missing ObjectID, missing numbers.
        let body = browse_body("", "BrowseMetadata", "0", "0");
        assert_eq!(
            cd("Browse", &body),
            Ok(browse("0", BrowseFlag::Metadata, 0, 0))
        );
        let body = envelope("<u:Browse><BrowseFlag>BrowseDirectChildren</BrowseFlag></u:Browse>");
        assert_eq!(
            cd("Browse", &body),
            Ok(browse("0", BrowseFlag::DirectChildren, 0, 0))
        );
        // Nested elements inside an argument do not add to it.
        let body = envelope(
            "<u:Browse><ObjectID>0<x>1</x></ObjectID><BrowseFlag>BrowseMetadata</BrowseFlag>\
             <Extra><ObjectID>9</ObjectID></Extra></u:Browse>",
        );
        assert_eq!(
            cd("Browse", &body),
            Ok(browse("0", BrowseFlag::Metadata, 0, 0))
        );
    }

    #[test]
    fn refuses_bad_arguments() {
        for (flag, start, count) in [
            ("BrowseSomething", "0", "0"),
            ("browsemetadata", "0", "0"),
            ("BrowseMetadata", "-1", "0"),
            ("BrowseMetadata", "0", "x"),
            ("BrowseMetadata", "", "0"),
            ("BrowseMetadata", "0", "4294967296"),
        ] {
            let body = browse_body("0", flag, start, count);
            assert_eq!(
                cd("Browse", &body),
                Err(SoapFault::InvalidArgs),
                "{flag} {start} {count}"
            );
        }
        let body = envelope("<u:Browse><ObjectID>0</ObjectID></u:Browse>");
        assert_eq!(cd("Browse", &body), Err(SoapFault::InvalidArgs));
        let long_id = "a".repeat(ARGUMENT_BYTES_MAX + 1);
        let body = browse_body(&long_id, "BrowseMetadata", "0", "0");
        assert_eq!(cd("Browse", &body), Err(SoapFault::NoSuchObject));
        let huge = " ".repeat(BODY_BYTES_MAX + 1);
        assert_eq!(cd("GetSystemUpdateID", &huge), Err(SoapFault::InvalidArgs));
        // Broken before the action element ends.
        let body = "<s:Envelope><s:Body><u:Browse><BrowseFlag>BrowseMetadata</BrowseFlag><Obj";
        assert_eq!(cd("Browse", body), Err(SoapFault::InvalidArgs));
        // Broken after it: read.
        let body = envelope("<u:GetSystemUpdateID/>") + "<<";
        assert_eq!(
            cd("GetSystemUpdateID", &body),
            Ok(Action::GetSystemUpdateID)
        );
    }

    #[test]
    fn refuses_other_services_and_unknown_actions() {
        let body = envelope("<u:GetSystemUpdateID/>");
        let other = format!("\"{CONNECTION_MANAGER_TYPE}#GetSystemUpdateID\"");
        let version_2 = "urn:schemas-upnp-org:service:ContentDirectory:2#GetSystemUpdateID";
        for header in [other.as_str(), version_2, "GetSystemUpdateID", "#", "x#"] {
            let read = parse_request(
                Service::ContentDirectory,
                Some(header.as_bytes()),
                body.as_bytes(),
            );
            assert_eq!(read, Err(SoapFault::InvalidAction), "{header}");
        }
        assert_eq!(cd("Search", &body), Err(SoapFault::InvalidAction));
        let read = parse_request(Service::ConnectionManager, None, body.as_bytes());
        assert_eq!(read, Err(SoapFault::InvalidAction));
        let read = parse_request(Service::ContentDirectory, None, b"");
        assert_eq!(read, Err(SoapFault::InvalidAction));
        for body in [
            &b"<a><Body></Body></a>"[..],
            b"<a><Body/><x><GetSystemUpdateID/></x></a>",
        ] {
            let read = parse_request(Service::ContentDirectory, None, body);
            assert_eq!(read, Err(SoapFault::InvalidAction));
        }
    }

    #[test]
    fn reads_the_other_actions() {
        for (name, action) in [
            ("GetSearchCapabilities", Action::GetSearchCapabilities),
            ("GetSortCapabilities", Action::GetSortCapabilities),
            ("GetSystemUpdateID", Action::GetSystemUpdateID),
            ("X_GetFeatureList", Action::XGetFeatureList),
        ] {
            let body = envelope(&format!("<u:{name} xmlns:u=\"{CONTENT_DIRECTORY_TYPE}\"/>"));
            assert_eq!(cd(name, &body), Ok(action.clone()), "{name}");
            // No body at all: the header is enough for an action without
            // arguments.
            assert_eq!(cd(name, ""), Ok(action), "{name}");
        }
        let cm = |name: &str, body: &str| {
            let header = format!("{CONNECTION_MANAGER_TYPE}#{name}");
            parse_request(
                Service::ConnectionManager,
                Some(header.as_bytes()),
                body.as_bytes(),
            )
        };
        assert_eq!(cm("GetProtocolInfo", ""), Ok(Action::GetProtocolInfo));
        assert_eq!(
            cm("GetCurrentConnectionIDs", ""),
            Ok(Action::GetCurrentConnectionIDs)
        );
        let body = envelope(
            "<u:GetCurrentConnectionInfo><ConnectionID>-3</ConnectionID></u:GetCurrentConnectionInfo>",
        );
        assert_eq!(
            cm("GetCurrentConnectionInfo", &body),
            Ok(Action::GetCurrentConnectionInfo { connection_id: -3 })
        );
        assert_eq!(
            cm("GetCurrentConnectionInfo", ""),
            Err(SoapFault::InvalidArgs)
        );
        assert_eq!(cm("Browse", ""), Err(SoapFault::InvalidAction));
    }

    #[test]
    fn browse_root_metadata_is_the_container() {
        let text = respond(&browse("0", BrowseFlag::Metadata, 0, 0), &ITEMS).unwrap();
        let names = elements(&text);
        let outputs: Vec<_> = names
            .iter()
            .skip_while(|name| *name != "BrowseResponse")
            .skip(1)
            .collect();
        assert_eq!(
            outputs,
            ["Result", "NumberReturned", "TotalMatches", "UpdateID"]
        );
        assert!(text.contains(
            "<Result>&lt;DIDL-Lite xmlns=&quot;urn:schemas-upnp-org:metadata-1-0/DIDL-Lite/&quot;"
        ));
        let didl = element_text(&text, "Result").unwrap();
        elements(&didl);
        assert!(didl.contains(
            "<container id=\"0\" parentID=\"-1\" restricted=\"1\" searchable=\"0\" childCount=\"3\">\
             <dc:title>Living &lt;room&gt;</dc:title><upnp:class>object.container.storageFolder</upnp:class>"
        ));
        assert_eq!(
            element_text(&didl, "title").as_deref(),
            Some("Living <room>")
        );
        assert_eq!(element_text(&text, "NumberReturned").as_deref(), Some("1"));
        assert_eq!(element_text(&text, "TotalMatches").as_deref(), Some("1"));
        assert_eq!(element_text(&text, "UpdateID").as_deref(), Some("7"));
    }

    #[test]
    fn browse_children_pages_through_the_channels() {
        let ids = |text: &str| -> Vec<StdString> {
            let didl = element_text(text, "Result").unwrap();
            elements(&didl);
            didl.match_indices("<item id=\"")
                .map(|(at, _)| {
                    let rest = &didl[at + 10..];
                    StdString::from(&rest[..rest.find('"').unwrap()])
                })
                .collect()
        };
        for (start, count, expected) in [
            (0, 0, &["ch0", "ch2", "ch5"][..]),
            (0, 1_000_000_000, &["ch0", "ch2", "ch5"]),
            (1, 1, &["ch2"]),
            (1, 0, &["ch2", "ch5"]),
            (3, 0, &[]),
            (u32::MAX, u32::MAX, &[]),
        ] {
            let text = respond(
                &browse("0", BrowseFlag::DirectChildren, start, count),
                &ITEMS,
            )
            .unwrap();
            assert_eq!(ids(&text), expected, "{start} {count}");
            assert_eq!(
                element_text(&text, "NumberReturned"),
                Some(expected.len().to_string())
            );
            assert_eq!(element_text(&text, "TotalMatches").as_deref(), Some("3"));
        }
    }

    #[test]
    fn browse_items_escape_twice() {
        let text = respond(&browse("ch2", BrowseFlag::Metadata, 0, 0), &ITEMS).unwrap();
        assert!(text.contains("&lt;dc:title&gt;a&amp;lt;b&amp;gt;&amp;amp;c&lt;/dc:title&gt;"));
        let didl = element_text(&text, "Result").unwrap();
        elements(&didl);
        assert_eq!(element_text(&didl, "title").as_deref(), Some("a<b>&c"));
        assert_eq!(
            element_text(&didl, "res").as_deref(),
            Some("http://192.168.1.2:8090/channel/x.ts?a=1&b=2")
        );
        assert!(didl.contains(&format!(
            "<item id=\"ch2\" parentID=\"0\" restricted=\"1\"><dc:title>a&lt;b&gt;&amp;c</dc:title>\
             <upnp:class>object.item.videoItem</upnp:class><res protocolInfo=\"{PROTOCOL_INFO}\">"
        )));
        assert_eq!(element_text(&text, "NumberReturned").as_deref(), Some("1"));
    }

    #[test]
    fn browse_faults_and_empty_children() {
        for id in [
            "ch1",
            "ch02",
            "ch",
            "ch+2",
            "x",
            "-1",
            "ch99999999999999999999999",
        ] {
            assert_eq!(
                respond(&browse(id, BrowseFlag::Metadata, 0, 0), &ITEMS),
                Err(SoapFault::NoSuchObject),
                "{id}"
            );
        }
        let text = respond(&browse("ch5", BrowseFlag::DirectChildren, 0, 0), &ITEMS).unwrap();
        assert_eq!(element_text(&text, "NumberReturned").as_deref(), Some("0"));
        assert_eq!(element_text(&text, "TotalMatches").as_deref(), Some("0"));
        elements(&element_text(&text, "Result").unwrap());
        // No channels at all.
        let text = respond(&browse("0", BrowseFlag::DirectChildren, 0, 0), &[]).unwrap();
        assert_eq!(element_text(&text, "TotalMatches").as_deref(), Some("0"));
    }

    #[test]
    fn answers_the_other_actions() {
        let text = respond(&Action::GetSystemUpdateID, &ITEMS).unwrap();
        assert!(text.contains(&format!(
            "<u:GetSystemUpdateIDResponse xmlns:u=\"{CONTENT_DIRECTORY_TYPE}\"><Id>7</Id>\
             </u:GetSystemUpdateIDResponse>"
        )));
        let text = respond(&Action::GetSearchCapabilities, &ITEMS).unwrap();
        assert!(text.contains("<SearchCaps></SearchCaps>"));
        let text = respond(&Action::GetSortCapabilities, &ITEMS).unwrap();
        assert!(text.contains("<SortCaps></SortCaps>"));
        let text = respond(&Action::XGetFeatureList, &ITEMS).unwrap();
        let features = element_text(&text, "FeatureList").unwrap();
        elements(&features);
        assert!(features.contains(
            "<Feature name=\"samsung.com_BASICVIEW\" version=\"1\">\
             <container id=\"0\" type=\"object.item.videoItem\"/></Feature>"
        ));
        let text = respond(&Action::GetProtocolInfo, &ITEMS).unwrap();
        assert!(text.contains(&format!(
            "<u:GetProtocolInfoResponse xmlns:u=\"{CONNECTION_MANAGER_TYPE}\">\
             <Source>{PROTOCOL_INFO}</Source><Sink></Sink>"
        )));
        let text = respond(&Action::GetCurrentConnectionIDs, &ITEMS).unwrap();
        assert!(text.contains("<ConnectionIDs>0</ConnectionIDs>"));
        let text = respond(
            &Action::GetCurrentConnectionInfo { connection_id: 0 },
            &ITEMS,
        )
        .unwrap();
        assert_eq!(element_text(&text, "Direction").as_deref(), Some("Output"));
        assert_eq!(element_text(&text, "Status").as_deref(), Some("OK"));
        assert_eq!(element_text(&text, "RcsID").as_deref(), Some("-1"));
        assert_eq!(
            respond(
                &Action::GetCurrentConnectionInfo { connection_id: 1 },
                &ITEMS
            ),
            Err(SoapFault::InvalidConnectionReference)
        );
    }

    #[test]
    fn faults_carry_the_upnp_error() {
        let text = render(|w| render_fault(w, SoapFault::NoSuchObject));
        elements(&text);
        assert!(text.contains(
            "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>\
             <UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>701</errorCode>\
             <errorDescription>No such object</errorDescription></UPnPError></detail></s:Fault>"
        ));
    }

    /// 32-byte names and 100-byte URLs, escaped or not.
    fn full_library_items(title: &str, url: &str) -> Vec<Item<'static>> {
        let title: &'static str = std::boxed::Box::leak(title.into());
        let url: &'static str = std::boxed::Box::leak(url.into());
        (0..ITEMS_MAX)
            .map(|id_index| Item {
                id_index,
                title,
                url,
            })
            .collect()
    }

    #[test]
    fn the_largest_library_fits_the_response_buffer() {
        let url = format!("http://192.168.100.200:65535/channel/{}", "u".repeat(63));
        assert_eq!(url.len(), 100);
        // Channel names are A-Z a-z 0-9 _ - . (nothing to escape); the last
        // case is the worst any text could be: every byte an `&`.
        let plain = "n".repeat(crate::limits::CHANNEL_NAME_BYTES_MAX);
        let worst = "&".repeat(crate::limits::CHANNEL_NAME_BYTES_MAX);
        for title in [plain, worst] {
            let items = full_library_items(&title, &url);
            let text = respond(&browse("0", BrowseFlag::DirectChildren, 0, 0), &items).unwrap();
            assert!(text.len() <= BUFFER_BYTES);
            assert_eq!(element_text(&text, "NumberReturned").as_deref(), Some("32"));
            std::println!("32 channels, titles {title:.1}: {} bytes", text.len());
        }
        // Too small a buffer is a failed action, never a panic.
        let items = full_library_items("x", &url);
        let library = slice_library(&items, 1, "x");
        let mut small = [0u8; 4096];
        let mut w = SliceWriter::new(&mut small);
        let action = browse("0", BrowseFlag::DirectChildren, 0, 0);
        assert_eq!(
            render_response(&mut w, &action, &library),
            Err(SoapFault::ActionFailed)
        );
    }

    #[test]
    fn library_skips_missing_items_and_caps_the_count() {
        let library = Library {
            count: usize::MAX,
            item: |index| {
                (index % 2 == 0).then_some(Item {
                    id_index: index,
                    title: "t",
                    url: "http://h/",
                })
            },
            system_update_id: 0,
            friendly_name: "f",
        };
        assert_eq!(library.total(), ITEMS_MAX / 2);
        assert_eq!(library.find(4).map(|item| item.id_index), Some(4));
        assert_eq!(library.find(3), None);
        assert_eq!(library.find(ITEMS_MAX), None);
    }

    #[test]
    fn control_answers_or_faults() {
        let library = slice_library(&ITEMS, 3, "f");
        let mut buffer = std::vec![0u8; BUFFER_BYTES];
        let header = format!("\"{CONTENT_DIRECTORY_TYPE}#Browse\"");
        let body = browse_body("0", "BrowseDirectChildren", "0", "0");
        let mut w = SliceWriter::new(&mut buffer);
        let status = render_control(
            &mut w,
            Service::ContentDirectory,
            Some(header.as_bytes()),
            body.as_bytes(),
            &library,
        );
        assert_eq!(status, Ok(STATUS_OK));
        assert!(w
            .written()
            .ends_with(b"</u:BrowseResponse></s:Body></s:Envelope>\r\n"));
        let body = browse_body("ch9", "BrowseMetadata", "0", "0");
        let mut w = SliceWriter::new(&mut buffer);
        let status = render_control(
            &mut w,
            Service::ContentDirectory,
            Some(header.as_bytes()),
            body.as_bytes(),
            &library,
        );
        assert_eq!(status, Ok(STATUS_FAULT));
        let text = core::str::from_utf8(w.written()).unwrap();
        assert!(text.starts_with("<?xml"));
        assert_eq!(element_text(text, "errorCode").as_deref(), Some("701"));
    }

    #[test]
    fn escapes_xml_specials_and_drops_forbidden_characters() {
        let mut out = StdString::new();
        write_escaped(&mut out, "a&b<c>d\"e\u{1}f\tg\u{ffff}h").unwrap();
        assert_eq!(out, "a&amp;b&lt;c&gt;d&quot;e f\tg h");
    }

    /// Writes every document to `$TMPDIR/ringcast-dlna/` for checks with
    /// outside parsers (python's xml.etree, async-upnp-client):
    /// `cargo test -p ringcast --lib -- lan::dlna --ignored`.
    #[test]
    #[ignore]
    fn dump_documents_for_outside_validation() {
        let directory = std::env::temp_dir().join("ringcast-dlna");
        let dlna = directory.join("dlna");
        std::fs::create_dir_all(&dlna).unwrap();
        let write = |name: &str, text: &str| std::fs::write(directory.join(name), text).unwrap();
        write(
            DESCRIPTION_PATH.trim_start_matches('/'),
            &render(|w| render_description(w, &device())),
        );
        write(
            CONTENT_DIRECTORY_SCPD_PATH.trim_start_matches('/'),
            &render(render_content_directory_scpd),
        );
        write(
            CONNECTION_MANAGER_SCPD_PATH.trim_start_matches('/'),
            &render(render_connection_manager_scpd),
        );
        let url = format!("http://192.168.100.200:65535/channel/{}", "u".repeat(63));
        let items = full_library_items(&"&".repeat(32), &url);
        let text = respond(&browse("0", BrowseFlag::DirectChildren, 0, 0), &items).unwrap();
        write("browse_children.xml", &text);
        write(
            "browse_children_didl.xml",
            &element_text(&text, "Result").unwrap(),
        );
        let text = respond(&browse("0", BrowseFlag::Metadata, 0, 0), &ITEMS).unwrap();
        write("browse_root.xml", &text);
        write(
            "browse_root_didl.xml",
            &element_text(&text, "Result").unwrap(),
        );
        let text = respond(&Action::XGetFeatureList, &ITEMS).unwrap();
        write("features.xml", &text);
        write(
            "features_inner.xml",
            &element_text(&text, "FeatureList").unwrap(),
        );
        let text = respond(&Action::GetProtocolInfo, &ITEMS).unwrap();
        write("protocol_info.xml", &text);
        write(
            "fault.xml",
            &render(|w| render_fault(w, SoapFault::InvalidArgs)),
        );
    }
}
