//! Reading an IGD's device description (UPnP Device Architecture 1.1 §2.3,
//! InternetGatewayDevice:1 and :2): finding the WANIPConnection and
//! WANPPPConnection services and the absolute URLs to control them.
//!
//! Parsing is tolerant, as real routers demand: `service` elements are
//! found at any depth, names match without namespace prefix and in any
//! case, the service type matches by prefix and its version is read from
//! the suffix, control URLs may be CDATA, entity-escaped, padded, relative
//! or absolute, and resolve against `URLBase` when the description has one
//! (UDA 1.0) or else against the description's own location. A service
//! whose control URL cannot be used (a host name, not an IPv4 literal) is
//! skipped. Results are ordered WANIPConnection first, then WANPPPConnection,
//! each in document order. Nothing here allocates.

use core::fmt;

use heapless::{String, Vec};

use crate::portmap::httpc::{parse_http_url, resolve, HttpUrl, URL_PATH_BYTES_MAX};
use crate::portmap::xml::{Event, Scanner, TextBuffer};

/// WAN connection services kept from one description.
pub const SERVICES_MAX: usize = 4;

/// Bytes of a service type (`urn:schemas-upnp-org:service:WANPPPConnection:1`
/// is 46).
pub const SERVICE_TYPE_BYTES_MAX: usize = 96;

/// WAN connection services collected before resolving (a description may
/// list unusable ones before usable ones).
pub const CANDIDATES_MAX: usize = 8;

/// Bytes of a control URL or `URLBase` as written (room for
/// `http://255.255.255.255:65535` before a full path).
pub const URL_TEXT_BYTES_MAX: usize = URL_PATH_BYTES_MAX + 32;

const SERVICE_TYPE_PREFIX: &str = "urn:schemas-upnp-org:service:";

/// The WAN connection services that can map ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    WanIp,
    WanPpp,
}

impl ServiceKind {
    /// The service name in the service type URN.
    pub const fn name(&self) -> &'static str {
        match self {
            ServiceKind::WanIp => "WANIPConnection",
            ServiceKind::WanPpp => "WANPPPConnection",
        }
    }
}

/// One usable WAN connection service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub kind: ServiceKind,
    /// The `N` of `...:WANIPConnection:N` (2 means AddAnyPortMapping exists).
    pub version: u8,
    /// The service type as the description wrote it (for `SOAPAction`).
    pub service_type: String<SERVICE_TYPE_BYTES_MAX>,
    /// Absolute control URL.
    pub control: HttpUrl,
}

/// The WAN connection services of a description, WANIPConnection first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    pub services: Vec<Service, SERVICES_MAX>,
}

/// Why a description gave no usable service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescError {
    /// Not XML, or broken before any WAN connection service was read.
    Malformed,
    /// No WANIPConnection or WANPPPConnection service with a usable
    /// control URL (the device is not an IGD, or not a usable one).
    NoWanService,
}

impl fmt::Display for DescError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DescError::Malformed => "malformed device description",
            DescError::NoWanService => "no usable WAN connection service in device description",
        })
    }
}

/// Finds the WAN connection services of the description `xml`, fetched
/// from `location`.
pub fn parse_description(xml: &[u8], location: &HttpUrl) -> Result<Description, DescError> {
    let mut walk = Walk::new();
    let mut scanner = Scanner::new(xml);
    while let Some(event) = scanner.next() {
        walk.handle(event, scanner.last_text_is_cdata());
    }
    if !walk.saw_element || (scanner.failed() && walk.candidates.is_empty()) {
        return Err(DescError::Malformed);
    }
    let base = walk.url_base.as_deref().and_then(parse_http_url);
    let base = base.as_ref().unwrap_or(location);
    let mut description = Description {
        services: Vec::new(),
    };
    for kind in [ServiceKind::WanIp, ServiceKind::WanPpp] {
        for candidate in walk.candidates.iter().filter(|c| c.kind == kind) {
            let Some(control) = resolve(base, &candidate.control) else {
                continue;
            };
            let service = Service {
                kind,
                version: candidate.version,
                service_type: candidate.service_type.clone(),
                control,
            };
            // Beyond SERVICES_MAX the rest are dropped: four are plenty.
            let _ = description.services.push(service);
        }
    }
    if description.services.is_empty() {
        return Err(DescError::NoWanService);
    }
    Ok(description)
}

/// Which element text is being collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    ServiceType,
    ControlUrl,
    UrlBase,
}

/// A WAN connection service before its control URL is resolved.
struct Candidate {
    kind: ServiceKind,
    version: u8,
    service_type: String<SERVICE_TYPE_BYTES_MAX>,
    control: String<URL_TEXT_BYTES_MAX>,
}

/// The state of one pass over the description's events.
struct Walk {
    depth: usize,
    saw_element: bool,
    /// Depth of the open `service` element.
    service_depth: Option<usize>,
    /// The field being collected and the depth of its element.
    field: Option<(Field, usize)>,
    text: TextBuffer<URL_TEXT_BYTES_MAX>,
    service_type: Option<String<SERVICE_TYPE_BYTES_MAX>>,
    control: Option<String<URL_TEXT_BYTES_MAX>>,
    url_base: Option<String<URL_TEXT_BYTES_MAX>>,
    candidates: Vec<Candidate, CANDIDATES_MAX>,
}

impl Walk {
    fn new() -> Self {
        Walk {
            depth: 0,
            saw_element: false,
            service_depth: None,
            field: None,
            text: TextBuffer::new(),
            service_type: None,
            control: None,
            url_base: None,
            candidates: Vec::new(),
        }
    }

    fn handle(&mut self, event: Event<'_>, cdata: bool) {
        match event {
            Event::Start(name) => {
                self.depth += 1;
                self.saw_element = true;
                self.start(name);
            }
            Event::Text(raw) if self.field.is_some() => self.text.push(raw, cdata),
            Event::Text(_) => {}
            Event::End(_) => {
                self.end();
                self.depth = self.depth.saturating_sub(1);
            }
        }
    }

    fn start(&mut self, name: &[u8]) {
        if self.field.is_some() {
            return;
        }
        let field = if self.service_depth.is_some() {
            if name.eq_ignore_ascii_case(b"serviceType") {
                Some(Field::ServiceType)
            } else if name.eq_ignore_ascii_case(b"controlURL") {
                Some(Field::ControlUrl)
            } else {
                None
            }
        } else if name.eq_ignore_ascii_case(b"service") {
            self.service_depth = Some(self.depth);
            self.service_type = None;
            self.control = None;
            None
        } else if name.eq_ignore_ascii_case(b"URLBase") && self.url_base.is_none() {
            Some(Field::UrlBase)
        } else {
            None
        };
        if let Some(field) = field {
            self.field = Some((field, self.depth));
            self.text.clear();
        }
    }

    /// An element ends at `self.depth`: closes the field or service there.
    fn end(&mut self) {
        if let Some((field, depth)) = self.field {
            if depth == self.depth {
                self.field = None;
                self.finish_field(field);
            }
            return;
        }
        if self.service_depth == Some(self.depth) {
            self.service_depth = None;
            self.finish_service();
        }
    }

    fn finish_field(&mut self, field: Field) {
        let Some(text) = self.text.trimmed().filter(|text| !text.is_empty()) else {
            return;
        };
        match field {
            Field::ServiceType => self.service_type = String::try_from(text).ok(),
            Field::ControlUrl => self.control = String::try_from(text).ok(),
            Field::UrlBase => self.url_base = String::try_from(text).ok(),
        }
    }

    fn finish_service(&mut self) {
        let (Some(service_type), Some(control)) = (self.service_type.take(), self.control.take())
        else {
            return;
        };
        let Some((kind, version)) = classify(&service_type) else {
            return;
        };
        let candidate = Candidate {
            kind,
            version,
            service_type,
            control,
        };
        // Beyond CANDIDATES_MAX the rest are dropped.
        let _ = self.candidates.push(candidate);
    }
}

/// The kind and version of a WAN connection service type such as
/// `urn:schemas-upnp-org:service:WANIPConnection:2` (any case).
fn classify(service_type: &str) -> Option<(ServiceKind, u8)> {
    let rest = strip_prefix_ignore_case(service_type, SERVICE_TYPE_PREFIX)?;
    [ServiceKind::WanIp, ServiceKind::WanPpp]
        .into_iter()
        .find_map(|kind| {
            let version = strip_prefix_ignore_case(rest, kind.name())?.strip_prefix(':')?;
            if version.is_empty() || !version.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            let version: u8 = version.parse().ok()?;
            (version >= 1).then_some((kind, version))
        })
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    extern crate std;

    /// miniupnpd 2.3.1 (Debian, IGDv2), byte for byte as served on one line
    /// after the XML declaration, captured from the project's test bed.
    pub(crate) const MINIUPNPD_IGD2: &str = concat!(
        "<?xml version=\"1.0\"?>\r\n",
        "<root xmlns=\"urn:schemas-upnp-org:device-1-0\" configId=\"1337\"><specVersion><major>1</major><minor>1</minor></specVersion>",
        "<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType><friendlyName>testbed IGD</friendlyName>",
        "<manufacturer>Debian</manufacturer><manufacturerURL>http://www.debian.org/</manufacturerURL><modelDescription>Debian router</modelDescription>",
        "<modelName>Debian router</modelName><modelNumber>1</modelNumber><modelURL>http://www.debian.org/</modelURL><serialNumber>00000000</serialNumber>",
        "<UDN>uuid:3f1e0c3a-1b2c-4d5e-8f90-0123456789ab</UDN><serviceList>",
        "<service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId><SCPDURL>/L3F.xml</SCPDURL><controlURL>/ctl/L3F</controlURL><eventSubURL>/evt/L3F</eventSubURL></service>",
        "<service><serviceType>urn:schemas-upnp-org:service:DeviceProtection:1</serviceType><serviceId>urn:upnp-org:serviceId:DeviceProtection1</serviceId><SCPDURL>/DP.xml</SCPDURL><controlURL>/ctl/DP</controlURL><eventSubURL>/evt/DP</eventSubURL></service>",
        "</serviceList><deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType><friendlyName>WANDevice</friendlyName>",
        "<manufacturer>MiniUPnP</manufacturer><manufacturerURL>http://miniupnp.free.fr/</manufacturerURL><modelDescription>WAN Device</modelDescription>",
        "<modelName>WAN Device</modelName><modelNumber>20221221</modelNumber><modelURL>http://miniupnp.free.fr/</modelURL><serialNumber>00000000</serialNumber>",
        "<UDN>uuid:3f1e0c3a-1b2c-4d5e-8f90-0123456789ac</UDN><UPC>000000000000</UPC><serviceList>",
        "<service><serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType><serviceId>urn:upnp-org:serviceId:WANCommonIFC1</serviceId><SCPDURL>/WANCfg.xml</SCPDURL><controlURL>/ctl/CmnIfCfg</controlURL><eventSubURL>/evt/CmnIfCfg</eventSubURL></service>",
        "</serviceList><deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:2</deviceType><friendlyName>WANConnectionDevice</friendlyName>",
        "<manufacturer>MiniUPnP</manufacturer><manufacturerURL>http://miniupnp.free.fr/</manufacturerURL><modelDescription>MiniUPnP daemon</modelDescription>",
        "<modelName>MiniUPnPd</modelName><modelNumber>20221221</modelNumber><modelURL>http://miniupnp.free.fr/</modelURL><serialNumber>00000000</serialNumber>",
        "<UDN>uuid:3f1e0c3a-1b2c-4d5e-8f90-0123456789ad</UDN><UPC>000000000000</UPC><serviceList>",
        "<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><SCPDURL>/WANIPCn.xml</SCPDURL><controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL></service>",
        "<service><serviceType>urn:schemas-upnp-org:service:WANIPv6FirewallControl:1</serviceType><serviceId>urn:upnp-org:serviceId:WANIPv6Firewall1</serviceId><SCPDURL>/WANIP6FC.xml</SCPDURL><controlURL>/ctl/IP6FCtl</controlURL><eventSubURL>/evt/IP6FCtl</eventSubURL></service>",
        "</serviceList></device></deviceList></device></deviceList><presentationURL>http://192.168.77.1/</presentationURL></device></root>"
    );

    /// The IGDv1 shape miniupnpd serves with `force_igd_desc_v1=yes`:
    /// version 1 types, no DeviceProtection or IPv6 firewall service.
    const MINIUPNPD_IGD1: &str = concat!(
        "<?xml version=\"1.0\"?>\r\n",
        "<root xmlns=\"urn:schemas-upnp-org:device-1-0\"><specVersion><major>1</major><minor>0</minor></specVersion>",
        "<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><friendlyName>OpenWrt router</friendlyName>",
        "<manufacturer>OpenWrt</manufacturer><UDN>uuid:00000000-0000-0000-0000-000000000000</UDN><serviceList>",
        "<service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId><SCPDURL>/L3F.xml</SCPDURL><controlURL>/ctl/L3F</controlURL><eventSubURL>/evt/L3F</eventSubURL></service>",
        "</serviceList><deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><friendlyName>WANDevice</friendlyName><serviceList>",
        "<service><serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType><serviceId>urn:upnp-org:serviceId:WANCommonIFC1</serviceId><SCPDURL>/WANCfg.xml</SCPDURL><controlURL>/ctl/CmnIfCfg</controlURL><eventSubURL>/evt/CmnIfCfg</eventSubURL></service>",
        "</serviceList><deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><friendlyName>WANConnectionDevice</friendlyName><serviceList>",
        "<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><SCPDURL>/WANIPCn.xml</SCPDURL><controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL></service>",
        "</serviceList></device></deviceList></device></deviceList><presentationURL>http://192.168.1.1/</presentationURL></device></root>\r\n"
    );

    /// A Fritz!Box-style description: prefixed names, a comment, URLBase,
    /// the PPP service listed before the IP one, a CDATA and an escaped
    /// control URL, pretty-printed and nested four devices deep.
    const FRITZ_STYLE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<!-- generated by the box -->
<igd:root xmlns:igd="urn:schemas-upnp-org:device-1-0" xmlns:ms="urn:microsoft-com:wmc-1-0">
  <igd:specVersion><igd:major>1</igd:major><igd:minor>0</igd:minor></igd:specVersion>
  <igd:URLBase>
    http://192.168.178.1:49000
  </igd:URLBase>
  <igd:device>
    <igd:deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</igd:deviceType>
    <igd:friendlyName>FRITZ!Box 7590 &amp; friends</igd:friendlyName>
    <igd:iconList><igd:icon><igd:mimetype>image/gif</igd:mimetype><igd:url>/ligd.gif</igd:url></igd:icon></igd:iconList>
    <igd:serviceList>
      <igd:service>
        <igd:serviceType>urn:schemas-any-com:service:Any:1</igd:serviceType>
        <igd:controlURL>/igdupnp/control/any</igd:controlURL>
      </igd:service>
    </igd:serviceList>
    <igd:deviceList>
      <igd:device>
        <igd:deviceType>urn:schemas-upnp-org:device:WANDevice:1</igd:deviceType>
        <igd:deviceList>
          <igd:device ms:X_attr="a>b">
            <igd:deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</igd:deviceType>
            <igd:serviceList>
              <igd:service>
                <igd:serviceType>urn:schemas-upnp-org:service:WANDSLLinkConfig:1</igd:serviceType>
                <igd:controlURL>/igdupnp/control/WANDSLLinkC1</igd:controlURL>
              </igd:service>
              <igd:service>
                <igd:serviceType>
                  urn:schemas-upnp-org:service:WANPPPConnection:1
                </igd:serviceType>
                <igd:serviceId>urn:upnp-org:serviceId:WANPPPConn1</igd:serviceId>
                <igd:controlURL><![CDATA[/igdupnp/control/WANPPPConn1]]></igd:controlURL>
                <igd:eventSubURL>/igdupnp/control/WANPPPConn1</igd:eventSubURL>
              </igd:service>
              <igd:service>
                <igd:serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</igd:serviceType>
                <igd:serviceId>urn:upnp-org:serviceId:WANIPConn1</igd:serviceId>
                <igd:controlURL>/igdupnp/control/WANIPConn1?a=1&amp;b=2</igd:controlURL>
              </igd:service>
            </igd:serviceList>
          </igd:device>
        </igd:deviceList>
      </igd:device>
    </igd:deviceList>
    <igd:presentationURL>http://fritz.box</igd:presentationURL>
  </igd:device>
</igd:root>
"#;

    fn location(text: &str) -> HttpUrl {
        parse_http_url(text).unwrap()
    }

    fn control(service: &Service) -> std::string::String {
        std::format!("{}{}", service.control.addr, service.control.path)
    }

    #[test]
    fn miniupnpd_igd2() {
        let at = location("http://192.168.77.1:5000/rootDesc.xml");
        let description = parse_description(MINIUPNPD_IGD2.as_bytes(), &at).unwrap();
        assert_eq!(description.services.len(), 1);
        let service = &description.services[0];
        assert_eq!((service.kind, service.version), (ServiceKind::WanIp, 2));
        assert_eq!(
            service.service_type.as_str(),
            "urn:schemas-upnp-org:service:WANIPConnection:2"
        );
        assert_eq!(control(service), "192.168.77.1:5000/ctl/IPConn");
    }

    #[test]
    fn miniupnpd_igd1() {
        let at = location("http://192.168.1.1:5000/rootDesc.xml");
        let description = parse_description(MINIUPNPD_IGD1.as_bytes(), &at).unwrap();
        assert_eq!(description.services.len(), 1);
        let service = &description.services[0];
        assert_eq!((service.kind, service.version), (ServiceKind::WanIp, 1));
        assert_eq!(control(service), "192.168.1.1:5000/ctl/IPConn");
    }

    #[test]
    fn fritz_style_with_url_base_cdata_and_ppp() {
        let at = location("http://192.168.178.1:49000/igddesc.xml");
        let description = parse_description(FRITZ_STYLE.as_bytes(), &at).unwrap();
        let services = &description.services;
        assert_eq!(services.len(), 2);
        assert_eq!(
            (services[0].kind, services[0].version),
            (ServiceKind::WanIp, 1)
        );
        assert_eq!(
            control(&services[0]),
            "192.168.178.1:49000/igdupnp/control/WANIPConn1?a=1&b=2"
        );
        assert_eq!(services[1].kind, ServiceKind::WanPpp);
        assert_eq!(
            services[1].service_type.as_str(),
            "urn:schemas-upnp-org:service:WANPPPConnection:1"
        );
        assert_eq!(
            control(&services[1]),
            "192.168.178.1:49000/igdupnp/control/WANPPPConn1"
        );
    }

    #[test]
    fn url_base_wins_over_location_and_relative_urls_use_its_directory() {
        let xml =
            "<root><URLBase>http://10.0.0.1:2869/upnp/</URLBase><device><serviceList><service>\
            <serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>\
            <controlURL>control/wanip</controlURL></service></serviceList></device></root>";
        let at = location("http://10.0.0.1:80/desc/root.xml");
        let description = parse_description(xml.as_bytes(), &at).unwrap();
        assert_eq!(
            control(&description.services[0]),
            "10.0.0.1:2869/upnp/control/wanip"
        );

        // A URLBase naming a host is no help: fall back to the location.
        let xml = xml.replace("http://10.0.0.1:2869/upnp/", "http://router.lan/");
        let description = parse_description(xml.as_bytes(), &at).unwrap();
        assert_eq!(
            control(&description.services[0]),
            "10.0.0.1:80/desc/control/wanip"
        );
    }

    #[test]
    fn skips_unusable_services_and_keeps_order() {
        let service = |kind: &str, url: &str| {
            std::format!(
                "<service><serviceType>urn:schemas-upnp-org:service:{kind}</serviceType><controlURL>{url}</controlURL></service>"
            )
        };
        let mut xml = std::string::String::from("<root><device><serviceList>");
        xml += &service("WANPPPConnection:1", "/ppp1");
        xml += &service("WANIPConnection:1", "http://router.lan/ip0");
        xml += &service("WANIPConnection:x", "/bad-version");
        xml += &service("WANIPConnectionX:1", "/bad-name");
        xml += &service("WANIPConnection:1", "");
        xml += "<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType></service>";
        xml += &service("wanipconnection:2", "/ip1");
        xml += &service("WANPPPConnection:1", "/ppp2");
        xml += &service("WANIPConnection:1", "/ip2");
        xml += &service("WANIPConnection:1", "/ip3");
        xml += &service("WANIPConnection:1", "/ip4");
        xml += "</serviceList></device></root>";
        let at = location("http://10.0.0.1:5000/d.xml");
        let description = parse_description(xml.as_bytes(), &at).unwrap();
        let paths: std::vec::Vec<&str> = description
            .services
            .iter()
            .map(|s| s.control.path.as_str())
            .collect();
        assert_eq!(paths, ["/ip1", "/ip2", "/ip3", "/ip4"]);
        assert_eq!(description.services[0].version, 2);
    }

    #[test]
    fn truncated_after_a_service_still_yields_it() {
        let cut = MINIUPNPD_IGD2.find("<presentationURL>").unwrap();
        let truncated = std::format!("{}<presentationURL", &MINIUPNPD_IGD2[..cut]);
        let at = location("http://192.168.77.1:5000/rootDesc.xml");
        let description = parse_description(truncated.as_bytes(), &at).unwrap();
        assert_eq!(description.services.len(), 1);
    }

    #[test]
    fn errors() {
        let at = location("http://192.168.1.1/");
        let not_igd = MINIUPNPD_IGD2.replace("WANIPConnection", "WANIPv6Only");
        assert_eq!(
            parse_description(not_igd.as_bytes(), &at),
            Err(DescError::NoWanService)
        );
        for garbage in [&b""[..], b"not xml at all", b"<root><device", b"\x00\xff<"] {
            assert_eq!(parse_description(garbage, &at), Err(DescError::Malformed));
        }
        assert_eq!(
            std::format!("{}", DescError::NoWanService),
            "no usable WAN connection service in device description"
        );
    }
}
