//! Port mapping on the home router: UPnP IGD v1/v2, NAT-PMP and PCP, as
//! sans-IO codecs and state machines (being written).

pub mod desc;
pub mod httpc;
pub mod natpmp;
pub mod pcp;
pub mod soap;
pub mod xml;
