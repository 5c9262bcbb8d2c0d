//! Where Services and EndpointSlices come from: a kube-apiserver (kube-runtime watchers) or a
//! directory of manifests. Both feed one [`Index`]; the agent plans only once every source has
//! delivered its complete initial list, so it never programs from partial state.

pub mod index;
pub mod manifests;
pub mod node;
pub mod watch;

pub use index::{Index, Shared};
pub use node::NodeFacts;
