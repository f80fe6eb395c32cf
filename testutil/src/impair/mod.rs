//! Seeded network impairment for tests and the `impair-proxy` command (the kernel here has no
//! netem): the model ([`model`], no I/O, time passed in), a UDP proxy ([`udp`]) and a TCP proxy
//! ([`tcp`]) that apply it, with faults (cut, half-open) switched on and off while running.

pub mod model;
mod sched;
pub mod tcp;
pub mod udp;

pub use model::{ImpairStats, Impairer, Impairment};
pub use tcp::{TcpProxy, TcpStats};
pub use udp::{Direction, UdpProxy};
