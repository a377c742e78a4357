//! One host's view of the simulated network: [`SimNet`] implements
//! [`crate::Net`] for the host it was made for, and [`SimRegion`] is the ring
//! memory it hands out, a plain boxed slice allocated once.
//!
//! Every host has the same fake interfaces (see [`SIM_INTERFACES`]); they
//! only matter to `interface_index` and to multicast interface checks, as a
//! simulated host has a single address.

use core::net::{IpAddr, SocketAddr};

use super::error::{SimError, SimResult};
use super::stream::{SimListener, SimStream};
use super::udp::SimUdp;
use super::world::{HostId, SimWorld};

/// The interfaces every simulated host has, by name and index.
pub const SIM_INTERFACES: [(&str, u32); 4] = [("lo", 1), ("eth0", 2), ("br-lan", 3), ("wlan0", 4)];

pub(super) fn interface_exists(index: u32) -> bool {
    SIM_INTERFACES.iter().any(|(_, known)| *known == index)
}

/// Ring memory for the simulation: zeroed bytes on the heap.
#[derive(Debug)]
pub struct SimRegion {
    bytes: Box<[u8]>,
}

impl crate::Region for SimRegion {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes
    }
}

/// The network of one simulated host. Clones share the host.
#[derive(Clone, Debug)]
pub struct SimNet {
    world: SimWorld,
    host: HostId,
    ip: IpAddr,
}

impl SimNet {
    pub(super) fn new(world: SimWorld, host: HostId, ip: IpAddr) -> Self {
        Self { world, host, ip }
    }

    /// The host's address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The world the host lives in.
    pub fn world(&self) -> &SimWorld {
        &self.world
    }
}

impl crate::Net for SimNet {
    type Error = SimError;
    type Region = SimRegion;
    type Stream = SimStream;
    type Listener = SimListener;
    type Udp = SimUdp;

    fn region(&self, bytes: usize) -> SimResult<SimRegion> {
        if bytes == 0 {
            return Err(SimError::InvalidInput);
        }
        Ok(SimRegion {
            bytes: vec![0; bytes].into_boxed_slice(),
        })
    }

    fn tcp_listen(&self, address: SocketAddr, backlog: u32) -> SimResult<SimListener> {
        let host = self.host;
        let listener = self
            .world
            .with(|state| state.tcp_listen(host, address, backlog))?;
        Ok(SimListener::new(self.world.clone(), listener))
    }

    fn tcp_connect(&self, address: SocketAddr) -> SimResult<SimStream> {
        let host = self.host;
        let connection = self.world.with(|state| state.tcp_connect(host, address))?;
        Ok(SimStream::new_client(self.world.clone(), connection))
    }

    fn connect_result(&self, stream: &SimStream) -> SimResult<()> {
        let connection = stream.connection();
        self.world
            .with(|state| state.tcp_connect_result(connection))
    }

    fn udp_bind(&self, address: SocketAddr) -> SimResult<SimUdp> {
        let host = self.host;
        let socket = self.world.with(|state| state.udp_bind(host, address))?;
        Ok(SimUdp::new(self.world.clone(), socket))
    }

    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl core::future::Future<Output = SimResult<SocketAddr>> {
        // The simulated world has no names: only IP literals resolve.
        let resolved = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map(|ip| SocketAddr::new(ip, port))
            .map_err(|_| SimError::NotFound);
        core::future::ready(resolved)
    }

    fn interface_index(&self, name: &str) -> SimResult<u32> {
        let found = SIM_INTERFACES.iter().find(|(known, _)| *known == name);
        found.map(|(_, index)| *index).ok_or(SimError::NotFound)
    }

    fn default_route(&self, _interface: Option<&str>) -> SimResult<Option<crate::Route>> {
        // The simulated world has no router (yet): port mapping finds none.
        Ok(None)
    }

    fn ipv4_interfaces(&self, _out: &mut [crate::InterfaceAddress]) -> SimResult<usize> {
        Ok(0)
    }
}
