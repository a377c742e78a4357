//! RTP/UDP output of a channel (being written): the task that sends the
//! ring's packets to a multicast group as they arrive.

use std::rc::Rc;

use ringcast_hal::{Clock, Net};

use super::Node;

/// Sends channel `index` to its configured output (not written yet).
pub async fn output_task<N: Net + 'static, C: Clock + 'static>(node: Rc<Node<N, C>>, index: usize) {
    let _ = (node, index);
}
